"""The contract between controller and sidecar: the compiled config a sidecar runs on.

Pure data (frozen msgspec structs, no I/O). The controller produces it, the sidecar validates and runs it;
nothing here knows about Kubernetes. Field names are camelCase on the wire (as in the CRDs)
and snake_case in Python. Every public name is importable from `proxy.snapshot`.

Versions. During an upgrade the controller runs the new image while sidecars run the old one
until their pods restart. A sidecar refuses a field it does not know (a typo, or a feature it
lacks, must never be ignored silently), and the wire leaves out every field at its default, so
an older sidecar refuses only a snapshot that uses something it does not know. That holds only if:

- a new field has a default, and that default means "feature off": the behaviour of a sidecar
  that never heard of the field. (Without a default every snapshot carries it, and every older
  sidecar refuses every snapshot until its pod restarts.)
- a default never changes: the field is left out at its new default, and an older sidecar reads
  it as the old one. Changing a default is a breaking change; add a field instead.
- a field is never renamed or given a narrower type, and a required field never goes away.

tests/unit/test_snapshot_compat.py holds today's wire to these rules against the recorded schema
of an older sidecar.
"""

from proxy.snapshot.base import (
    DATA_CLASS_HEADER,
    DATA_CLASS_RANK,
    DATA_CLASSES,
    BedrockApi,
    DataClass,
    Hosting,
    RetryOn,
    Secret,
    VertexPublisher,
)
from proxy.snapshot.checks import (
    GUARDRAIL_KINDS,
    GUARDRAIL_NAME,
    GUARDRAIL_TIMEOUT_MS_MAX,
    REDACTION_KINDS,
    REDACTION_NAME,
    REDACTION_REGEX_MAX,
    ConfigProblem,
    GuardrailKind,
    GuardrailPhase,
    RedactionKind,
    check_base_url,
    check_ca_bundle,
    check_guardrail_url,
    check_redaction_regex,
    check_regex,
    check_service_account_key,
    shown,
)
from proxy.snapshot.policies import (
    BackendDenial,
    BackendRedaction,
    BudgetAction,
    Denial,
    FailureMode,
    Guardrail,
    Limit,
    LimitScope,
    Policy,
    Redaction,
    RedactionPattern,
    RerouteBackend,
    RouteDenial,
    merge_redactions,
)
from proxy.snapshot.providers import (
    AwsKeys,
    BedrockSettings,
    Capacity,
    EntraSettings,
    ModelPricing,
    ModelWindow,
    Provider,
    VertexSettings,
)
from proxy.snapshot.routes import Arm, Backend, Experiment, HeaderMatch, Retry, Route, Rule, Timeouts, TokenRange
from proxy.snapshot.skew import explain_refusal, older_sidecar, refused_field, snapshot_schema
from proxy.snapshot.wire import (
    COUNTS_MAX_BYTES,
    COUNTS_MAX_EXPERIMENTS,
    STREAM_PATH,
    TOKEN_AUDIENCE,
    LimitStore,
    Snapshot,
    content_version,
    parse_snapshot,
    parse_struct,
    problem_text,
    to_wire,
)

__all__ = [
    "COUNTS_MAX_BYTES",
    "COUNTS_MAX_EXPERIMENTS",
    "DATA_CLASSES",
    "DATA_CLASS_HEADER",
    "DATA_CLASS_RANK",
    "GUARDRAIL_KINDS",
    "GUARDRAIL_NAME",
    "GUARDRAIL_TIMEOUT_MS_MAX",
    "REDACTION_KINDS",
    "REDACTION_NAME",
    "REDACTION_REGEX_MAX",
    "STREAM_PATH",
    "TOKEN_AUDIENCE",
    "Arm",
    "AwsKeys",
    "Backend",
    "BackendDenial",
    "BackendRedaction",
    "BedrockApi",
    "BedrockSettings",
    "BudgetAction",
    "Capacity",
    "ConfigProblem",
    "DataClass",
    "Denial",
    "EntraSettings",
    "Experiment",
    "FailureMode",
    "Guardrail",
    "GuardrailKind",
    "GuardrailPhase",
    "HeaderMatch",
    "Hosting",
    "Limit",
    "LimitScope",
    "LimitStore",
    "ModelPricing",
    "ModelWindow",
    "Policy",
    "Provider",
    "Redaction",
    "RedactionKind",
    "RedactionPattern",
    "RerouteBackend",
    "Retry",
    "RetryOn",
    "Route",
    "RouteDenial",
    "Rule",
    "Secret",
    "Snapshot",
    "Timeouts",
    "TokenRange",
    "VertexPublisher",
    "VertexSettings",
    "check_base_url",
    "check_ca_bundle",
    "check_guardrail_url",
    "check_redaction_regex",
    "check_regex",
    "check_service_account_key",
    "content_version",
    "explain_refusal",
    "merge_redactions",
    "older_sidecar",
    "parse_snapshot",
    "parse_struct",
    "problem_text",
    "refused_field",
    "shown",
    "snapshot_schema",
    "to_wire",
]
