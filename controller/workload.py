"""Two small facts compilation and policy share: who a workload is, and a verdict on an object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Workload:
    """A sidecar's workload, as the controller verified it (TokenReview, then the Pod)."""

    namespace: str
    service_account: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    # The pod's `modelway.io/data-class` annotation, when it has one.
    data_class: str | None = None
    # Made once: the controller looks it up for every connected sidecar at every change.
    _key: tuple[str, str, tuple[tuple[str, str], ...], str | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = (self.namespace, self.service_account, tuple(sorted(self.labels.items())), self.data_class)
        object.__setattr__(self, "_key", key)

    def cache_key(self) -> tuple[str, str, tuple[tuple[str, str], ...], str | None]:
        return self._key


@dataclass(frozen=True, slots=True)
class Verdict:
    """One condition's worth of judgement: Gateway API style type/status/reason/message."""

    ok: bool
    reason: str
    message: str = ""
