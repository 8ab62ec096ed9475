"""The snapshot's building blocks: the frozen model base and the small vocabularies fields take."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

Hosting = Literal["saas", "vpc", "in-cluster"]
BedrockApi = Literal["converse", "anthropic-messages"]
VertexPublisher = Literal["google", "anthropic"]
RetryOn = Literal["connect-error", "timeout", "429", "5xx"]
DataClass = Literal["public", "internal", "personal", "restricted"]

# Least to most sensitive: a request's class may be raised along this order, never lowered
# below its workload's default, and a residency rule for one class binds every class above it.
DATA_CLASSES: tuple[DataClass, ...] = ("public", "internal", "personal", "restricted")
DATA_CLASS_RANK: dict[str, int] = {name: rank for rank, name in enumerate(DATA_CLASSES)}
DATA_CLASS_HEADER = "x-modelway-data-class"

_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)
