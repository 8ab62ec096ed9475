"""End-to-end tests run against real components (tests/harness)."""

# The harness's session fixtures (kube, kubectl, helm, helm_offline, jaeger,
# redis) and its hook that attaches component logs to failed reports.
from tests.harness.fixtures import *
