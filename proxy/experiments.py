"""The sidecar's experiment counts: per (experiment, arm), what the controller decides with.

Each request an experiment served is counted in its arm (`count`): answered or failed, its
latency, time to first token and cost; apps add a quality score later with the request id the
sidecar returned (`x-request-id`, `POST /v1/feedback`). The totals only grow, since this sidecar
started; `report()` is the stream's `counts` message (proxy.snapshot), which the controller keeps
per (sidecar, start) so a resend or reconnect counts nothing twice. Counting is a few additions
on the request's end, no I/O.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections import OrderedDict
from typing import Any

from aiohttp import web

from proxy.snapshot import COUNTS_MAX_EXPERIMENTS

REQUEST_ID_HEADER = "x-request-id"
# Where the request path leaves it for the answer's headers (proxy.feedback.add_request_id).
REQUEST_ID_KEY = web.RequestKey("modelway_request_id", str)
# Requests that may still get feedback, most recent kept: about 100 bytes each.
FEEDBACK_WINDOW = 100_000
SCORE_LIMIT = 1_000_000.0


class _Mean:
    __slots__ = ("count", "squares", "total")

    def __init__(self) -> None:
        self.count, self.total, self.squares = 0, 0.0, 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.squares += value * value

    def to_dict(self) -> dict[str, int | float]:
        return {"count": self.count, "sum": self.total, "sumSquares": self.squares}


class _Tally:
    """One arm's counts, in the controller's ArmStats shape (controller.experiments.counts)."""

    __slots__ = ("cost", "failures", "latency", "quality", "successes", "ttft")

    def __init__(self) -> None:
        self.successes = self.failures = 0
        self.latency, self.ttft, self.cost, self.quality = _Mean(), _Mean(), _Mean(), _Mean()

    def to_dict(self) -> dict[str, dict[str, int | float]]:
        out: dict[str, dict[str, int | float]] = {}
        if self.successes or self.failures:
            out["requests"] = {"successes": self.successes, "failures": self.failures}
        for key, mean in (
            ("latency", self.latency),
            ("timeToFirstToken", self.ttft),
            ("cost", self.cost),
            ("quality", self.quality),
        ):
            if mean.count:
                out[key] = mean.to_dict()
        return out


class ExperimentCounts:
    def __init__(self, *, sidecar: str | None = None, started: float | None = None) -> None:
        # Unique across pods and restarts without coordination; the start time tells restarts apart.
        self.sidecar = sidecar or f"{os.environ.get('HOSTNAME', 'sidecar')}-{uuid.uuid4().hex[:8]}"
        self.started = time.time() if started is None else started
        self._tallies: dict[str, dict[str, _Tally]] = {}
        self._pending: OrderedDict[str, _Tally] = OrderedDict()  # request id -> its arm's tally
        self._version = 0  # bumped by every count: a report is sent only when it moved
        self._reported = 0

    @staticmethod
    def new_request_id() -> str:
        return os.urandom(16).hex()  # as secrets.token_hex, without loading secrets (and hmac) into the sidecar

    def _tally(self, experiment: str, arm: str) -> _Tally | None:
        arms = self._tallies.get(experiment)
        if arms is None:
            if len(self._tallies) >= COUNTS_MAX_EXPERIMENTS:
                return None  # bounded: the controller would refuse a bigger report
            arms = self._tallies[experiment] = {}
        tally = arms.get(arm)
        if tally is None:
            tally = arms[arm] = _Tally()
        return tally

    def count(
        self,
        experiment: str,
        arm: str,
        *,
        status: int,
        duration: float,
        ttft: float | None,
        cost: float | None,
        request_id: str | None,
    ) -> None:
        """One request's end. A 4xx is the request's own fault (or the client left): not counted."""
        if 400 <= status < 500:
            return
        tally = self._tally(experiment, arm)
        if tally is None:
            return
        self._version += 1
        if status >= 500:
            tally.failures += 1
            return
        tally.successes += 1
        tally.latency.add(duration)
        if ttft is not None:
            tally.ttft.add(ttft)
        if cost is not None:
            tally.cost.add(cost)
        if request_id is not None:
            self._pending[request_id] = tally
            if len(self._pending) > FEEDBACK_WINDOW:
                self._pending.popitem(last=False)

    def feedback(self, request_id: str, score: float) -> bool:
        """A quality score for a request this sidecar served in an experiment; once per request.
        False when the id is not one (unknown, too old, or already scored)."""
        tally = self._pending.pop(request_id, None)
        if tally is None:
            return False
        tally.quality.add(score)
        self._version += 1
        return True

    def report(self, *, force: bool = False) -> dict[str, Any] | None:
        """The `counts` message with every total, or None when nothing moved since the last one."""
        if not self._tallies or (self._version == self._reported and not force):
            return None
        self._reported = self._version
        return {
            "type": "counts",
            "sidecar": self.sidecar,
            "started": self.started,
            "experiments": {
                name: {arm: tally.to_dict() for arm, tally in arms.items()} for name, arms in self._tallies.items()
            },
        }


def valid_score(value: object) -> float | None:
    """A score as apps send it: a finite number within +-SCORE_LIMIT."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    score = float(value)
    return score if math.isfinite(score) and abs(score) <= SCORE_LIMIT else None
