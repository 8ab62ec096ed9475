"""Which guardrails a request is asked about: by route, data class and phase, built once per snapshot."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from proxy.snapshot import DATA_CLASSES, Guardrail, GuardrailPhase, Snapshot

NONE: tuple[Guardrail, ...] = ()


class GuardrailTable:
    """(route name, data class, phase) -> the guardrails that apply, in the policies' order."""

    __slots__ = ("_by_key",)

    def __init__(self, by_key: dict[tuple[str, str, str], tuple[Guardrail, ...]]) -> None:
        self._by_key = by_key

    def __bool__(self) -> bool:
        return bool(self._by_key)

    @classmethod
    def build(cls, snapshot: Snapshot) -> GuardrailTable:
        guardrails = snapshot.policy.guardrails
        if not guardrails:
            return cls({})
        by_key: dict[tuple[str, str, str], tuple[Guardrail, ...]] = {}
        for route in snapshot.routes:
            for data_class in DATA_CLASSES:
                for phase in ("request", "response"):
                    chosen = tuple(_applying(guardrails, route.name, data_class, phase))
                    if chosen:
                        by_key[(route.name, data_class, phase)] = chosen
        return cls(by_key)

    def pick(self, route: str, data_class: str, phase: GuardrailPhase) -> tuple[Guardrail, ...]:
        return self._by_key.get((route, data_class, phase), NONE) if self._by_key else NONE


def _applying(guardrails: Iterable[Guardrail], route: str, data_class: str, phase: str) -> Iterable[Guardrail]:
    short = route.partition("/")[2] or route  # "<namespace>/<name>": policies name routes by metadata.name
    for guardrail in guardrails:
        if phase not in guardrail.phases:
            continue
        if guardrail.data_classes is not None and data_class not in guardrail.data_classes:
            continue
        if guardrail.routes is not None and not any(fnmatchcase(short, glob) for glob in guardrail.routes):
            continue
        yield guardrail
