"""Experiments on the controller: decide from the summed counts on a timer, keep the state for status.

Every `interval` seconds (10 by default) the runner walks the served routes' experiments, sums
what sidecars reported (experiment_reports.ReportLedger) and asks controller.experiments for
the decision (a test) or the shares (an adaptive rule). What it found is each route's
`status.experiments` entry (and the EXPERIMENT column), which the status writer writes when it
changed. The state lives in the route's status: on its first sight of an experiment after a start
the runner takes the start time, decision and shares back from there (`previous`), so a restarted
controller carries on (a decided experiment stays decided). Adaptive shares go back to the sidecars
as the arms' weights in the next snapshot, only when a weight moved by at least WEIGHT_STEP. An
adaptive rule maximises the spec's `reward` when it has one (else its metric), and its guardrails
take an arm shown worse than the control out of the split for good (weight 0, `excluded` in
status): Thompson sampling keeps sending a bad arm its floor of traffic, a guardrail stops that.
(That guardrail uses the rollouts' always-valid test, whose false-alarm level assumes shares fixed
in advance; the bandit moves them with the results, so for adaptive rules the level is approximate.)

The controller also sets the split exactly, through the same weights, when a test with `promote`
ends (a Winner takes all the traffic; StoppedByGuardrail sends it all back to the control) and at
each step of a gradual rollout (controller.experiments.rollout). The spec stays as the user wrote
it (a GitOps tool would fight a controller that rewrote it); the split in force is in status
(each arm's `share`, `promoted`, `rolledBack`, `rollout`) and, derived from there, survives a
restart.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controller.api import ExperimentSpec, ModelRoute, RouteRule, duration_seconds
from controller.compile_route import experiment_name
from controller.experiment_reports import CountsReport, PeerLedger, ReportLedger
from controller.experiments import bandit
from controller.experiments.counts import ArmStats, BadCounts
from controller.experiments.decide import (
    Breach,
    Decision,
    Guardrail,
    Metric,
    SequentialSpec,
    State,
    decide,
    guardrail_breaches,
    samples,
)
from controller.experiments.rollout import RolloutPlan, RolloutProgress, RolloutState, advance, candidate_share, start
from controller.store import Key

log = logging.getLogger("modelway.experiments")

METRICS = {
    "errorRate": Metric.ERROR_RATE,
    "latency": Metric.LATENCY,
    "ttft": Metric.TIME_TO_FIRST_TOKEN,
    "cost": Metric.COST,
    "quality": Metric.QUALITY,
}
WEIGHT_SCALE = 1000  # an adaptive arm's weight is its share in thousandths
WEIGHT_STEP = 20  # a new split is pushed when an arm's weight moved by two points or more
EXPLORATION_FLOOR = 0.05
ADAPTIVE = "Adaptive"


def sequential_spec(spec: ExperimentSpec) -> SequentialSpec:
    return SequentialSpec(
        metric=METRICS[spec.metric],
        mde=spec.minimum_detectable_effect,
        alpha=spec.alpha,
        min_samples=spec.minimum_sample,
        max_duration_seconds=duration_seconds(spec.max_duration) if spec.max_duration else None,
        guardrails=tuple(Guardrail(METRICS[g.metric], g.margin) for g in spec.guardrails),
    )


def rollout_plan(spec: ExperimentSpec) -> RolloutPlan | None:
    if spec.rollout is None:
        return None
    return RolloutPlan(
        steps=spec.rollout.steps,
        pause_seconds=duration_seconds(spec.rollout.pause),
        guardrails=tuple(Guardrail(METRICS[g.metric], g.margin) for g in spec.guardrails),
        min_samples=spec.minimum_sample,
    )


def adaptive_shares(
    spec: ExperimentSpec, arms: Mapping[str, ArmStats], *, excluded: Collection[str] = ()
) -> dict[str, float]:
    """Thompson sampling shares on the spec's reward, else its metric (lower is better but for quality).
    The `excluded` arms (a guardrail breached) get none."""
    if spec.reward is not None:
        reward = bandit.Reward(
            quality_weight=spec.reward.quality, cost_weight=spec.reward.cost, latency_weight=spec.reward.latency
        )
        return bandit.reward_shares(arms, reward, floor=EXPLORATION_FLOOR, excluded=excluded)
    metric = METRICS[spec.metric]
    if metric is Metric.ERROR_RATE:
        requests = {a: s.requests for a, s in arms.items()}
        return bandit.success_shares(requests, floor=EXPLORATION_FLOOR, excluded=excluded)
    if metric is Metric.TIME_TO_FIRST_TOKEN:  # the reward reads latency: put the first-token times there
        arms = {a: ArmStats(latency=s.time_to_first_token) for a, s in arms.items()}
    reward = {Metric.QUALITY: bandit.Reward(), Metric.COST: bandit.Reward(quality_weight=0.0, cost_weight=1.0)}.get(
        metric, bandit.Reward(quality_weight=0.0, latency_weight=1.0)
    )
    return bandit.reward_shares(arms, reward, floor=EXPLORATION_FLOOR, excluded=excluded)


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(text: object) -> float | None:
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


@dataclass(slots=True)
class ExperimentState:
    """One rule's experiment as the runner knows it; `entry()` is its status."""

    route: Key
    rule: str
    name: str
    metric: str
    arms: tuple[str, ...]
    started: float
    adaptive: bool
    promote: bool = False
    plan: RolloutPlan | None = None
    decision: Decision | None = None
    progress: RolloutProgress | None = None
    shares: dict[str, float] | None = None
    excluded: dict[str, Breach] = field(default_factory=dict)  # adaptive: arms out of the split, for good
    samples: dict[str, int] = field(default_factory=dict)

    @property
    def state(self) -> str:
        if self.adaptive:
            return ADAPTIVE
        if self.progress is not None:
            return self.progress.state.value
        return self.decision.state.value if self.decision is not None else "Running"

    @property
    def promoted(self) -> str | None:
        """The arm given all the traffic: a promoted winner, or a finished rollout's candidate."""
        if self.progress is not None:
            return self.arms[1] if self.progress.state is RolloutState.ROLLED_OUT else None
        if self.promote and self.decision is not None and self.decision.state is State.WINNER:
            return self.decision.winner
        return None

    @property
    def rolled_back(self) -> bool:
        if self.progress is not None:
            return self.progress.state is RolloutState.ROLLED_BACK
        return self.promote and self.decision is not None and self.decision.state is State.STOPPED_BY_GUARDRAIL

    def traffic(self) -> dict[str, float] | None:
        """Each arm's share when the controller sets the split (adaptive, promote, rollout); else None."""
        if self.adaptive:
            return self.shares
        if self.plan is not None and self.progress is not None:
            share = candidate_share(self.plan, self.progress) / 100
            return {self.arms[0]: 1.0 - share, self.arms[1]: share}
        only = self.promoted or (self.arms[0] if self.rolled_back else None)
        return {arm: float(arm == only) for arm in self.arms} if only is not None else None

    def summary(self) -> str:
        """The EXPERIMENT column's words for this rule."""
        if self.adaptive and self.shares:
            shares = " ".join(f"{arm}={self.shares.get(arm, 0.0):.0%}" for arm in self.arms)
            return shares + (f" (excluded {','.join(self.excluded)})" if self.excluded else "")
        if self.plan is not None and self.progress is not None:
            if self.progress.state is RolloutState.ROLLING_OUT:
                return f"RollingOut {self.arms[1]}={candidate_share(self.plan, self.progress)}%"
            return f"{self.state} {self.arms[1]}"
        if self.decision is not None and self.decision.winner is not None:
            return f"Winner {self.decision.winner}" + (" (promoted)" if self.promoted else "")
        return self.state + (" (rolled back)" if self.rolled_back else "")

    def entry(self) -> dict[str, Any]:
        traffic = self.traffic()
        out: dict[str, Any] = {
            "rule": self.rule,
            "experiment": self.name,
            "state": self.state,
            "metric": self.metric,
            "startedAt": _rfc3339(self.started),
            "arms": [
                {"name": arm, "samples": self.samples.get(arm, 0)}
                | ({"share": round(traffic.get(arm, 0.0), 4)} if traffic is not None else {})
                for arm in self.arms
            ],
        }
        if self.excluded:
            out["excluded"] = [breach.to_dict() for breach in self.excluded.values()]
        if self.promoted is not None:
            out["promoted"] = self.promoted
        if self.rolled_back:
            out["rolledBack"] = True
        if self.plan is not None and self.progress is not None:
            out["rollout"] = {
                "step": self.progress.step,
                "share": candidate_share(self.plan, self.progress),
                "stepStartedAt": _rfc3339(self.progress.step_started),
            }
            if self.progress.breach is not None:
                out["guardrail"] = self.progress.breach.to_dict()
        if self.decision is not None:
            decided = self.decision.to_dict()
            # JSON (and the API server) has no infinity: a comparison without a finite interval is left out
            out["comparisons"] = [c for c in decided["comparisons"] if _finite(c)]
            if "winner" in decided:
                out["winner"] = decided["winner"]
            if "guardrail" in decided:
                out["guardrail"] = decided["guardrail"]
        return out


def _finite(values: Mapping[str, Any]) -> bool:
    return all(math.isfinite(v) for v in values.values() if isinstance(v, float))


def restore(state: ExperimentState, previous: Mapping[str, Any] | None) -> None:
    """Takes back what an earlier controller wrote to status for this very experiment."""
    if previous is None or previous.get("experiment") != state.name:
        return
    started = _seconds(previous.get("startedAt"))
    if started is not None:
        state.started = started
    if state.adaptive:
        arms = previous.get("arms")
        if isinstance(arms, list):
            shares = {a.get("name"): a.get("share") for a in arms if isinstance(a, Mapping)}
            if all(isinstance(shares.get(arm), int | float) for arm in state.arms):
                state.shares = {arm: float(shares[arm]) for arm in state.arms}  # type: ignore[arg-type]
        state.excluded = _restored_exclusions(state, previous.get("excluded"))
        return
    if state.plan is not None:
        state.progress = _restored_progress(state, previous)
        return
    try:
        state.decision = Decision.from_dict(
            {k: previous[k] for k in ("state", "comparisons", "winner", "guardrail") if k in previous}
        )
    except BadCounts as exc:
        log.warning("experiment %s: ignoring the decision in status: %s", state.name, exc)


def _restored_exclusions(state: ExperimentState, raw: object) -> dict[str, Breach]:
    out: dict[str, Breach] = {}
    for item in raw if isinstance(raw, list) else ():
        try:
            breach = Breach.from_dict(item)
        except (BadCounts, TypeError, ValueError) as exc:
            log.warning("experiment %s: ignoring an exclusion in status: %s", state.name, exc)
            continue
        if breach.arm in state.arms[1:]:  # never the control
            out[breach.arm] = breach
    return out


def _restored_progress(state: ExperimentState, previous: Mapping[str, Any]) -> RolloutProgress | None:
    rollout = previous.get("rollout")
    if not isinstance(rollout, Mapping) or state.plan is None:
        return None
    try:
        phase = RolloutState(str(previous.get("state")))
        step = rollout.get("step")
        started = _seconds(rollout.get("stepStartedAt"))
        breach = Breach.from_dict(previous["guardrail"]) if isinstance(previous.get("guardrail"), Mapping) else None
    except (BadCounts, ValueError) as exc:
        log.warning("experiment %s: ignoring the rollout in status: %s", state.name, exc)
        return None
    if not isinstance(step, int) or not 0 <= step < len(state.plan.steps) or started is None:
        return None
    return RolloutProgress(phase, step, started, breach)


class ExperimentRunner:
    """Counts in (from the stream), decisions out (to status and, for adaptive rules, to snapshots)."""

    def __init__(
        self,
        *,
        routes: Callable[[], Mapping[Key, ModelRoute | None]],
        set_weights: Callable[[Key, Mapping[str, Mapping[str, int]]], None] | None = None,
        previous: Callable[[Key], Mapping[str, Any] | None] | None = None,
        interval: float = 10.0,
        active: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
        peers: Callable[[], Iterable[PeerLedger]] | None = None,
    ) -> None:
        self._routes = routes  # the served routes: what sidecars run
        self._set_weights = set_weights
        self._previous = previous  # a route's status as last seen (the watch's copy)
        self._interval = interval
        self._active = active
        self._clock = clock
        self._peers = peers  # other controller replicas' ledgers (controller.replicas), summed with ours
        self._peer_ledgers: list[PeerLedger] = []
        self._record_listeners: list[Callable[[], None]] = []
        self.ledger = ReportLedger()
        self._states: dict[str, ExperimentState] = {}
        self._weights: dict[Key, dict[str, dict[str, int]]] = {}
        self._listeners: list[Callable[[], None]] = []

    def add_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def add_record_listener(self, callback: Callable[[], None]) -> None:
        """`callback()` after each report taken in (the replica Lease publishes the ledger again)."""
        self._record_listeners.append(callback)

    def record(self, workload: str, report: CountsReport) -> None:
        self.ledger.record(workload, report)
        for listener in self._record_listeners:
            listener()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if not self._active():
                continue
            try:
                self.tick()
            except Exception:  # a bug must not end deciding for good
                log.exception("experiment decision pass failed")

    def tick(self) -> bool:
        """Decides every experiment once; true (and listeners told) when any status entry changed."""
        before = {name: s.entry() for name, s in self._states.items()}
        seen: set[str] = set()
        self._peer_ledgers = list(self._peers()) if self._peers is not None else []
        for key, route in self._routes().items():
            if route is None:
                continue
            for rule in route.spec.rules:
                if rule.experiment is not None:
                    seen.add(self._decide(key, route, rule))
        for gone in set(self._states) - seen:
            del self._states[gone]
        self.ledger.forget_except(seen)
        changed = before != {name: s.entry() for name, s in self._states.items()}
        if changed:
            for listener in self._listeners:
                listener()
        return changed

    def _decide(self, key: Key, route: ModelRoute, rule: RouteRule) -> str:
        spec = rule.experiment
        assert spec is not None
        name = experiment_name(route.metadata.namespace, route.metadata.name, rule)
        state = self._states.get(name)
        if state is None:
            state = ExperimentState(
                route=key,
                rule=rule.name,
                name=name,
                metric=spec.metric,
                arms=tuple(a.name for a in spec.arms),
                started=self._clock(),
                adaptive=spec.strategy == "adaptive",
                promote=spec.promote,
                plan=rollout_plan(spec),
            )
            previous = self._previous(key) if self._previous is not None else None
            restore(state, _entry_of(previous, rule.name))
            self._states[name] = state
        state.promote = spec.promote  # not in the experiment's name: switching it on or off keeps the test
        totals = self.ledger.totals(name, self._peer_ledgers)
        arms = {arm: totals.get(arm, ArmStats()) for arm in state.arms}
        metric = METRICS[spec.metric]
        state.samples = {arm: samples(stats, metric) for arm, stats in arms.items()}
        if state.adaptive:
            self._exclude(state, spec, arms)
            state.shares = adaptive_shares(spec, arms, excluded=state.excluded)
            self._apply_shares(key, rule.name, state.shares)
            return name
        if state.plan is not None:
            progress = state.progress or start(self._clock())
            state.progress = advance(state.plan, progress, arms, control=state.arms[0], now=self._clock())
            if state.progress != progress:
                log.info("experiment %s: %s %s", name, state.summary(), state.progress.breach or "")
            self._apply_traffic(key, rule.name, state.traffic())
            return name
        decision = decide(
            sequential_spec(spec),
            arms,
            control=state.arms[0],
            elapsed_seconds=self._clock() - state.started,
            previous=state.decision,
        )
        if decision.done and (state.decision is None or not state.decision.done):
            log.info("experiment %s: %s %s", name, decision.state.value, decision.winner or "")
        state.decision = decision
        self._apply_traffic(key, rule.name, state.traffic())
        return name

    def _exclude(self, state: ExperimentState, spec: ExperimentSpec, arms: Mapping[str, ArmStats]) -> None:
        """An adaptive rule's guardrails: an arm shown worse than the control beyond a margin leaves the
        split for good (its share 0, kept in status), as a breach stops a test."""
        guardrails = [Guardrail(METRICS[g.metric], g.margin) for g in spec.guardrails]
        breaches = guardrail_breaches(
            guardrails, arms, control=state.arms[0], alpha=spec.alpha, min_samples=spec.minimum_sample
        )
        for breach in breaches:
            if breach.arm not in state.excluded:
                log.info("experiment %s: arm %s excluded: %s", state.name, breach.arm, breach)
                state.excluded[breach.arm] = breach

    def _apply_traffic(self, key: Key, rule: str, traffic: Mapping[str, float] | None) -> None:
        """A split the controller sets exactly (promotion, rollback, a rollout's step), or the spec's own."""
        if self._set_weights is None:
            return
        current = self._weights.get(key, {})
        if traffic is None:
            if rule in current:  # promote switched off, say: back to the spec's weights
                del current[rule]
                self._set_weights(key, current)
            return
        wanted = {arm: round(share * WEIGHT_SCALE) for arm, share in traffic.items()}
        if current.get(rule) != wanted:
            self._weights.setdefault(key, {})[rule] = wanted
            self._set_weights(key, self._weights[key])

    def _apply_shares(self, key: Key, rule: str, shares: Mapping[str, float]) -> None:
        if self._set_weights is None:
            return
        # an excluded arm (share 0) gets weight 0; every other at least 1
        wanted = {arm: max(1, round(share * WEIGHT_SCALE)) if share > 0 else 0 for arm, share in shares.items()}
        current = self._weights.get(key, {}).get(rule)
        if current is not None and all(
            abs(wanted[a] - current.get(a, 0)) < WEIGHT_STEP and (wanted[a] == 0) == (current.get(a, 0) == 0)
            for a in wanted
        ):
            return  # debounced: a snapshot change per real move (or an arm excluded), not per decision pass
        self._weights.setdefault(key, {})[rule] = wanted
        self._set_weights(key, self._weights[key])

    def statuses(self) -> dict[Key, tuple[str, tuple[dict[str, Any], ...]]]:
        """Per route, the EXPERIMENT column and its experiments' status entries."""
        out: dict[Key, list[ExperimentState]] = {}
        for state in self._states.values():
            out.setdefault(state.route, []).append(state)
        return {
            key: ("; ".join(s.summary() for s in states)[:256], tuple(s.entry() for s in states))
            for key, states in out.items()
        }


def _entry_of(status: Mapping[str, Any] | None, rule: str) -> Mapping[str, Any] | None:
    entries = (status or {}).get("experiments")
    if not isinstance(entries, list):
        return None
    return next((e for e in entries if isinstance(e, Mapping) and e.get("rule") == rule), None)
