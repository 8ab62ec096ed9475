"""Passive health: a backend that keeps failing is left out of weighted picks for a while.

Modelled on Envoy's outlier detection (consecutive 5xx, base ejection time):
no probes, only what real requests learn. State is per sidecar and keyed by
backend ("provider/model"), so it survives snapshot swaps. No I/O; the clock
is injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class OutlierDetector:
    def __init__(
        self,
        *,
        consecutive_failures: int = 5,
        ejection_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = consecutive_failures
        self._ejection = ejection_seconds
        self._clock = clock
        self._failures: dict[str, int] = {}
        self._ejected_until: dict[str, float] = {}

    def record(self, backend: str, *, ok: bool) -> None:
        if ok:
            self._failures.pop(backend, None)
            return
        count = self._failures.get(backend, 0) + 1
        self._failures[backend] = count
        if count >= self._threshold:
            self._ejected_until[backend] = self._clock() + self._ejection
            self._failures[backend] = 0

    @property
    def any_ejected(self) -> bool:
        return bool(self._ejected_until)

    def healthy(self, backend: str) -> bool:
        until = self._ejected_until.get(backend)
        if until is None:
            return True
        if self._clock() >= until:
            del self._ejected_until[backend]  # back in rotation; one more failure streak ejects it again
            return True
        return False
