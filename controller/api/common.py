"""What every kind of the API shares: object metadata, conditions, durations and names."""

from __future__ import annotations

import functools
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "modelway.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Durations as Kubernetes users write them: Go's time.ParseDuration without a sign, e.g. "300ms",
# "1.5s", "1m30s", "2h", "1h2m3.5s" (units h, m, s, ms, us, ns; "0" alone too). Bounded (at most
# 5 integer and 9 fraction digits a part, 7 parts) so Go, CEL's duration() and this parser all
# take every string it allows. The CRDs use this very regex in their CEL rules (a unit test
# checks), so kubectl, `modelway dev` and the compiler accept the same strings.
DURATION_PATTERN = r"^(0|(([0-9]{1,5}([.][0-9]{1,9})?|[.][0-9]{1,9})(h|ms|m|s|us|ns)){1,7})$"
DURATION_MAX_LENGTH = 32
DURATION_HELP = "write numbers with units, e.g. 300ms, 1.5s, 1m30s or 2h (units h, m, s, ms, us, ns)"
_DURATION = re.compile(DURATION_PATTERN)
_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?(h|ms|m|s|us|ns)")
_UNIT_NANOS = {"h": 3_600_000_000_000, "m": 60_000_000_000, "s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def bounded(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


@functools.lru_cache(maxsize=1024)  # a handful of distinct strings, parsed for every rule compiled
def duration_seconds(value: str) -> float:
    """Seconds in a duration of DURATION_PATTERN, to the nanosecond as Go counts it; ValueError otherwise."""
    if len(value) > DURATION_MAX_LENGTH or not _DURATION.fullmatch(value):
        raise ValueError(f"{bounded(value)!r} is not a duration: {DURATION_HELP}")
    nanos = 0
    for whole, fraction, unit in _DURATION_PART.findall(value):
        scale = _UNIT_NANOS[unit]
        nanos += int(whole or "0") * scale
        if fraction:
            nanos += int(fraction) * scale // 10 ** len(fraction)  # Go truncates below a nanosecond too
    return nanos / 1e9


def _valid_duration(value: str) -> str:
    duration_seconds(value)
    return value


Duration = Annotated[str, Field(max_length=DURATION_MAX_LENGTH), AfterValidator(_valid_duration)]
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # the CRD's CEL rule uses the same regex


def dns_label(value: str) -> str:
    if not re.fullmatch(DNS_LABEL, value):
        raise ValueError(
            f"{bounded(value)!r} is not a DNS label: use lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, e.g. beta-testers"
        )
    return value


Hosting = Literal["saas", "vpc", "in-cluster"]
DataClass = Literal["public", "internal", "personal", "restricted"]


class FrozenModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)


class ObjectMeta(BaseModel):
    """The parts of metadata the controller uses; the rest is ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)

    name: str
    namespace: str = "default"
    uid: str = ""
    generation: int = 1
    resource_version: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Condition(FrozenModel):
    """metav1.Condition: every field is written, as the CRD's status schema requires."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[str, Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")]
    message: str
    observed_generation: int
    last_transition_time: str  # RFC 3339


ExperimentMetric = Literal["errorRate", "latency", "ttft", "cost", "quality"]


def above_zero(value: float) -> float:
    if not value > 0:
        raise ValueError(f"must be above 0, not {value}")
    return value


AboveZero = Annotated[float, Field(ge=0, le=1_000_000), AfterValidator(above_zero)]
