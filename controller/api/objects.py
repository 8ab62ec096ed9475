"""The kinds the controller reads, Kubernetes core types included, and parsing an object into one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from controller.api.common import ObjectMeta
from controller.api.policies import ClusterModelPolicy, ModelPolicy
from controller.api.providers import ModelProvider
from controller.api.routes import ModelRoute
from proxy.snapshot import ConfigProblem
from shared.config_text import validation_problems

# --- Core types the controller reads: Secrets (credentials) and Namespaces (labels, annotations)


class Secret(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)
    kind: Literal["Secret"] = "Secret"
    metadata: ObjectMeta
    data: dict[str, str] = Field(default_factory=dict)  # base64, as the API returns it
    string_data: dict[str, str] = Field(default_factory=dict)  # manifests in the file source


class Namespace(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)
    kind: Literal["Namespace"] = "Namespace"
    metadata: ObjectMeta

    @field_validator("metadata")
    @classmethod
    def _cluster_scoped(cls, metadata: ObjectMeta) -> ObjectMeta:
        return metadata.model_copy(update={"namespace": ""})


Resource = ModelProvider | ModelRoute | ModelPolicy | ClusterModelPolicy | Secret | Namespace
KINDS: dict[str, type[BaseModel]] = {
    "ModelProvider": ModelProvider,
    "ModelRoute": ModelRoute,
    "ModelPolicy": ModelPolicy,
    "ClusterModelPolicy": ClusterModelPolicy,
    "Secret": Secret,
    "Namespace": Namespace,
}
CLUSTER_KINDS = frozenset({"ClusterModelPolicy", "Namespace"})
PLURALS = {
    "ModelProvider": "modelproviders",
    "ModelRoute": "modelroutes",
    "ModelPolicy": "modelpolicies",
    "ClusterModelPolicy": "clustermodelpolicies",
}


# Kinds with a status: one of them that fails validation is kept as an InvalidObject, so its
# status can say why (the others are simply absent while invalid).
STATUS_KINDS = frozenset({"ModelProvider", "ModelRoute", "ModelPolicy", "ClusterModelPolicy"})


@dataclass(frozen=True, slots=True)
class InvalidObject:
    """An object the API server holds that the controller cannot use, and why.

    Kept beside (not instead of) the last valid version of the same object: that
    version keeps serving while the status of this one says what is wrong."""

    kind: str
    metadata: ObjectMeta
    reason: str  # a condition reason: InvalidRegex, InvalidURL, or Invalid
    message: str


def problems(exc: ValidationError) -> str:
    """Every problem as `field.path: message`, without input values (a Secret's never reach a log)."""
    return validation_problems(exc)


def _reason(exc: ValidationError) -> str:
    for error in exc.errors(include_input=False, include_url=False):
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigProblem):
            return cause.reason
    return "Invalid"


def parse_object(obj: dict[str, Any]) -> Resource | InvalidObject:
    """Like `parse_resource`, but an object of a kind with a status that fails validation comes
    back as an InvalidObject naming its problems. Raises for what cannot even be named."""
    try:
        return parse_resource(obj)
    except ValidationError as exc:
        kind = str(obj.get("kind"))
        if kind not in STATUS_KINDS:
            raise
        try:
            metadata = ObjectMeta.model_validate(obj.get("metadata") or {})
        except ValidationError:
            raise exc from None
        if kind in CLUSTER_KINDS:
            metadata = metadata.model_copy(update={"namespace": ""})
        return InvalidObject(kind=kind, metadata=metadata, reason=_reason(exc), message=problems(exc))


def parse_resource(obj: dict[str, Any]) -> Resource:
    """A Kubernetes object (dict) as one of the models; ValueError for kinds we do not handle."""
    kind = obj.get("kind")
    model = KINDS.get(kind or "")
    if model is None:
        raise ValueError(f"unsupported kind {kind!r}; expected one of {sorted(KINDS)}")
    return model.model_validate(obj)  # type: ignore[return-value]
