"""What sidecars report about experiments: validated as untrusted input, kept as the latest totals per sidecar.

A sidecar sends its running totals since it started (see proxy.snapshot, the stream's `counts`
message), tagged with its own id and start time. The ledger keeps the latest report of each
(workload, sidecar id, start time) and sums them: a resend, a reconnect to this or another
stream, replaces that sidecar's earlier totals instead of adding to them; a sidecar that
restarted is a new reporter, and what its former self counted stays in the sum.

With several controller replicas, each keeps the reports of the sidecars connected to it, and
only the leader decides. Each replica publishes its ledger (`published()`, per experiment the
latest totals of each reporter) and the leader sums its own and every peer's with `totals(name,
peers)`: a sidecar that moved from one replica to another is in both ledgers, its later totals
on the new one and its earlier ones on the old, and since totals only grow the copy with more
values counted is the one taken, never both.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controller.experiments.counts import ArmStats, BadCounts, merge_all
from proxy.snapshot import COUNTS_MAX_EXPERIMENTS

MAX_ARMS = 16
MAX_NAME = 400
MAX_REPORTERS = 10_000  # per experiment; beyond, the oldest reporters are folded into one sum
# A replica's published ledger rides on an annotation (all of an object's together: at most 256 KiB).
MAX_PUBLISHED_BYTES = 200_000

log = logging.getLogger("modelway.experiments")

Reporter = tuple[str, str, float]  # (workload, sidecar id, sidecar start)


@dataclass(frozen=True, slots=True)
class PeerLedger:
    """Another replica's ledger as it published it: per experiment, reporters folded into one sum
    (not told apart) and the latest totals of each reporter."""

    folded: dict[str, dict[str, ArmStats]]
    reporters: dict[str, dict[Reporter, dict[str, ArmStats]]]


def _values_counted(arms: Mapping[str, ArmStats]) -> int:
    return sum(
        a.requests.count + a.latency.count + a.time_to_first_token.count + a.cost.count + a.quality.count
        for a in arms.values()
    )


def parse_published(text: object) -> PeerLedger:
    """A peer's published ledger; what is malformed is skipped, never fatal (another version may write it)."""
    empty = PeerLedger({}, {})
    if not isinstance(text, str):
        return empty
    try:
        body = json.loads(text)
    except ValueError:
        return empty
    if not isinstance(body, dict):
        return empty
    folded: dict[str, dict[str, ArmStats]] = {}
    reporters: dict[str, dict[Reporter, dict[str, ArmStats]]] = {}
    for name, entry in body.items():
        if not isinstance(entry, dict):
            continue
        try:
            if entry.get("folded"):
                folded[str(name)] = _arms(entry["folded"])
            for item in entry.get("reporters") or ():
                workload, sidecar, started, arms = item
                reporter = (str(workload), str(sidecar), float(started))
                reporters.setdefault(str(name), {})[reporter] = _arms(arms)
        except (BadCounts, TypeError, ValueError):
            continue
    return PeerLedger(folded, reporters)


def _arms(raw: object) -> dict[str, ArmStats]:
    if not isinstance(raw, dict) or len(raw) > MAX_ARMS:
        raise BadCounts("not an experiment's arms")
    return {str(arm): ArmStats.from_dict(counts) for arm, counts in raw.items()}


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

    def totals(self, experiment: str, peers: Iterable[PeerLedger] = ()) -> dict[str, ArmStats]:
        """Every reporter's latest totals summed, per arm; with other replicas' ledgers, theirs too,
        each reporter once (its copy with the most values counted)."""
        latest: dict[Reporter, dict[str, ArmStats]] = dict(self._latest.get(experiment, {}))
        folded = [self._folded.get(experiment, {})]
        for peer in peers:
            folded.append(peer.folded.get(experiment, {}))
            for reporter, arms in peer.reporters.get(experiment, {}).items():
                mine = latest.get(reporter)
                if mine is None or _values_counted(arms) > _values_counted(mine):
                    latest[reporter] = arms
        return merge_all((*folded, *latest.values()))

    def published(self, *, max_bytes: int = MAX_PUBLISHED_BYTES) -> str:
        """This ledger for the other replicas (see PeerLedger): compact JSON. Past `max_bytes`, every
        reporter is folded into its experiment's sum: still counted, but a sidecar that moved between
        replicas may then count twice until the old replica's copy goes."""
        body = {
            name: {
                "folded": _dicts(self._folded.get(name, {})),
                "reporters": [[*reporter, _dicts(arms)] for reporter, arms in latest.items()],
            }
            for name, latest in self._latest.items()
        }
        text = json.dumps(body, separators=(",", ":"), sort_keys=True)
        if len(text) <= max_bytes:
            return text
        log.warning("experiment counts for the other replicas: %d bytes, folded into one sum per experiment", len(text))
        folded = {name: {"folded": _dicts(self.totals(name))} for name in self._latest}
        return json.dumps(folded, separators=(",", ":"), sort_keys=True)

    def forget_except(self, experiments: set[str]) -> None:
        """Drop experiments no route has any more."""
        for name in list(self._latest):
            if name not in experiments:
                del self._latest[name]
        for name in list(self._folded):
            if name not in experiments:
                del self._folded[name]


def _dicts(arms: Mapping[str, ArmStats]) -> dict[str, Any]:
    return {arm: stats.to_dict() for arm, stats in arms.items()}
