"""What sidecars report about experiments: validated as untrusted input, kept as the latest totals per sidecar.

A sidecar sends its running totals since it started (see proxy.snapshot, the stream's `counts`
message), tagged with its own id and start time. The ledger keeps the latest report of each
(workload, sidecar id, start time) and sums them: a resend, a reconnect to this or another
stream, replaces that sidecar's earlier totals instead of adding to them; a sidecar that
restarted is a new reporter, and what its former self counted stays in the sum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.experiments.counts import ArmStats, BadCounts, merge_all
from proxy.snapshot import COUNTS_MAX_EXPERIMENTS

MAX_ARMS = 16
MAX_NAME = 400
MAX_REPORTERS = 10_000  # per experiment; beyond, the oldest reporters are folded into one sum


@dataclass(frozen=True, slots=True)
class CountsReport:
    sidecar: str
    started: float
    experiments: dict[str, dict[str, ArmStats]]


def parse_counts(data: Mapping[str, Any], *, namespace: str) -> CountsReport:
    """A `counts` message, or BadCounts saying what is wrong with it.

    Only experiments of the sidecar's own namespace are taken: a workload cannot move another
    namespace's numbers (their names start with "<namespace>/")."""
    sidecar, started, experiments = data.get("sidecar"), data.get("started"), data.get("experiments")
    if not isinstance(sidecar, str) or not 0 < len(sidecar) <= MAX_NAME:
        raise BadCounts("'sidecar' must be a name of 1 to 400 characters")
    if isinstance(started, bool) or not isinstance(started, int | float) or not math.isfinite(started):
        raise BadCounts("'started' must be a number (the sidecar's start, in Unix seconds)")
    if not isinstance(experiments, Mapping) or len(experiments) > COUNTS_MAX_EXPERIMENTS:
        raise BadCounts(f"'experiments' must be a mapping of at most {COUNTS_MAX_EXPERIMENTS} experiments")
    out: dict[str, dict[str, ArmStats]] = {}
    for name, arms in experiments.items():
        if not isinstance(name, str) or len(name) > MAX_NAME or not name.startswith(namespace + "/"):
            raise BadCounts(f"experiment {str(name)[:MAX_NAME]!r} is not one of namespace {namespace}'s")
        if not isinstance(arms, Mapping) or len(arms) > MAX_ARMS:
            raise BadCounts(f"experiment {name!r}: arms must be a mapping of at most {MAX_ARMS}")
        out[name] = {}
        for arm, counts in arms.items():
            if not isinstance(arm, str) or not 0 < len(arm) <= 63:
                raise BadCounts(f"experiment {name!r}: arm names have 1 to 63 characters")
            out[name][arm] = ArmStats.from_dict(counts)
    return CountsReport(sidecar=sidecar, started=float(started), experiments=out)


class ReportLedger:
    """The latest totals of every reporter, per experiment."""

    def __init__(self) -> None:
        self._latest: dict[str, dict[tuple[str, str, float], dict[str, ArmStats]]] = {}
        self._folded: dict[str, dict[str, ArmStats]] = {}
        self.reports = 0

    def record(self, workload: str, report: CountsReport) -> None:
        self.reports += 1
        reporter = (workload, report.sidecar, report.started)
        for name, arms in report.experiments.items():
            latest = self._latest.setdefault(name, {})
            latest.pop(reporter, None)  # re-inserted last: the dict's order is the order of last report
            latest[reporter] = arms
            while len(latest) > MAX_REPORTERS:
                oldest = next(iter(latest))
                self._folded[name] = merge_all((self._folded.get(name, {}), latest.pop(oldest)))

    def totals(self, experiment: str) -> dict[str, ArmStats]:
        """Every reporter's latest totals summed, per arm."""
        return merge_all((self._folded.get(experiment, {}), *self._latest.get(experiment, {}).values()))

    def forget_except(self, experiments: set[str]) -> None:
        """Drop experiments no route has any more."""
        for name in list(self._latest):
            if name not in experiments:
                del self._latest[name]
        for name in list(self._folded):
            if name not in experiments:
                del self._folded[name]
