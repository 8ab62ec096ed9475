"""The real-component test harness: etcd + kube-apiserver, kubectl, helm,
Jaeger and Redis as local processes, and a one-node cluster that runs real
pods (``node.py``) (binaries and images from ``make tools``, see
tests/tools/build.sh). Session fixtures are in ``tests.harness.fixtures``;
pull them into a test folder with ``from tests.harness.fixtures import *`` in
its conftest.py."""
