"""Which arm of an experiment a request goes to: by weight, or sticky by a header's value. Pure.

Sticky assignment hashes the header's value with a fixed-key BLAKE2b (not Python's `hash()`,
which is salted per process), so every sidecar in every pod sends one user to the same arm for
as long as the arms' weights stay as they are.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence

import msgspec

_KEY = b"modelway.experiment.arm"
_SCALE = float(1 << 64)


def sticky_point(experiment: str, value: str) -> float:
    """A point in [0, 1) fixed by the experiment and the value, the same in every process."""
    digest = hashlib.blake2b(f"{experiment}\0{value}".encode(), key=_KEY, digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


class ArmPicker(msgspec.Struct, frozen=True):
    """The arms' cumulative weights, made once per snapshot."""

    cumulative: tuple[int, ...]

    @classmethod
    def of(cls, weights: Sequence[int]) -> ArmPicker:
        running, cumulative = 0, []
        for weight in weights:
            running += weight
            cumulative.append(running)
        if not running:
            raise ValueError("at least one arm needs a weight above 0")
        return cls(tuple(cumulative))

    def index(self, point: float) -> int:
        """The arm at `point` in [0, 1): each arm owns a stretch as long as its weight."""
        found = bisect.bisect_right(self.cumulative, point * self.cumulative[-1])
        return min(found, len(self.cumulative) - 1)
