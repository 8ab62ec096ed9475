"""Status: what the controller concluded, written back onto ModelRoutes, ModelProviders and policies.

The leader (a Lease, see leader.py) writes `Accepted`, `ResolvedRefs` and, for
routes, `Programmed` plus how many sidecars run the route's current generation
(and `PolicyRestricted` while policies take backends from it); ModelPolicies and
ClusterModelPolicies get `Accepted` and `ResolvedRefs`, and with a budget their spend
(`spend`, the SPEND column) and `SpendReported` (shared and current, or why not). A route
with experiments also gets their state (`experiments`, the EXPERIMENT column).
Every replica computes the same thing from its own watch cache; only the
leader writes, so replicas never fight over a field.

- Pure part: `desired_statuses` (judgement + sidecar sync -> conditions),
  `render` (stamps lastTransitionTime, kept while a condition's status holds)
  and `condition_events` (which transitions deserve an Event). No I/O.

Writing them (the leader's `StatusWriter`, the watch's `ObservedStatuses`,
`modelway dev`'s `ConditionLogger`) is in `controller.status_writer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from controller import spend as sp
from controller.api import (
    BudgetSpendStatus,
    Condition,
    ModelPolicyStatus,
    ModelProviderStatus,
    ModelRouteStatus,
    PolicySpendStatus,
)
from controller.compile import Judgement, RouteVerdict
from controller.compile_provider import ProviderVerdict
from controller.core import RouteSync
from controller.policy import PolicyVerdict
from controller.store import Key, Resources, key_of
from controller.workload import Verdict

MAX_MESSAGE = 32768  # the CRDs' maxLength for a condition message
# A route's experiments (controller.experiment_runner): the EXPERIMENT column and each rule's entry.
ExperimentStatus = tuple[str, tuple[dict[str, Any], ...]]
NO_SYNC = RouteSync(synced=0, total=0)
_ACTIONS = {
    "Accepted": "Validate",
    "ResolvedRefs": "ResolveRefs",
    "Programmed": "Program",
    "PolicyRestricted": "Restrict",
    "SpendReported": "ReadSpend",
}


# --- the pure part ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wanted:
    """One condition as decided, before it gets its timestamps."""

    type: str
    status: Literal["True", "False"]
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class DesiredStatus:
    kind: str
    namespace: str
    name: str
    uid: str
    generation: int
    conditions: tuple[Wanted, ...]
    synced: int | None = None  # routes only: sidecars running the current generation
    total: int | None = None  # routes only: connected sidecars the route applies to
    spend: sp.PolicySpend | None = None  # policies with a budget only
    experiment: str | None = None  # routes with an experiment only: the EXPERIMENT column
    experiments: tuple[dict[str, Any], ...] = ()  # and each rule's experiment

    @property
    def key(self) -> Key:
        return (self.kind, self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class EventSpec:
    type: Literal["Normal", "Warning"]
    reason: str
    note: str
    action: str


def _wanted(type_: str, verdict: Verdict) -> Wanted:
    return Wanted(type_, "True" if verdict.ok else "False", verdict.reason, verdict.message)


def _why(verdict: RouteVerdict) -> str:
    bad = verdict.accepted if not verdict.accepted.ok else verdict.resolved_refs
    return f"{bad.reason}: {bad.message}" if bad.message else bad.reason


_REJECTION_ECHO = 500  # a sidecar's own words, bounded: a condition message is no place for a dump


def programmed(verdict: RouteVerdict, sync: RouteSync) -> tuple[Wanted, int]:
    """The Programmed condition and how many sidecars run the route's *current* generation."""
    served = verdict.served
    if served is None:
        return Wanted("Programmed", "False", "Invalid", f"no sidecar runs this route: {_why(verdict)}"), 0
    if not (verdict.accepted.ok and verdict.resolved_refs.ok):  # a broken edit: the last good version stays
        message = f"sidecars keep generation {served.metadata.generation}: {_why(verdict)}"
        return Wanted("Programmed", "False", "Invalid", message), 0
    counts = f"{sync.synced}/{sync.total} sidecars run generation {verdict.generation}"
    if sync.rejected:
        message = (
            f"{sync.rejected}/{sync.total} sidecars refused the snapshot with generation "
            f"{verdict.generation} and keep their last good one; {sync.rejection[:_REJECTION_ECHO]}"
        )
        return Wanted("Programmed", "False", "SidecarRejected", message), sync.synced
    if sync.synced < sync.total:
        return Wanted("Programmed", "False", "Pending", counts), sync.synced
    if sync.total == 0:
        counts += " (no sidecar this route applies to is connected)"
    return Wanted("Programmed", "True", "Programmed", counts), sync.synced


def policy_restricted(restrictions: Sequence[str]) -> tuple[Wanted, ...]:
    """PolicyRestricted, present only while policies take backends (or the whole route) from some of the
    route's workloads: informational, so it never turns False (which would read as a problem)."""
    if not restrictions:
        return ()
    return (
        Wanted(
            "PolicyRestricted", "True", "BackendsRestricted", "for the workloads they bind: " + "; ".join(restrictions)
        ),
    )


def route_status(
    key: Key,
    verdict: RouteVerdict,
    sync: RouteSync,
    *,
    uid: str = "",
    restrictions: Sequence[str] = (),
    experiments: ExperimentStatus | None = None,
) -> DesiredStatus:
    program, synced = programmed(verdict, sync)
    conditions = (
        _wanted("Accepted", verdict.accepted),
        _wanted("ResolvedRefs", verdict.resolved_refs),
        program,
        *policy_restricted(restrictions),
    )
    summary, entries = experiments if experiments is not None else (None, ())
    return DesiredStatus(
        key[0],
        key[1],
        key[2],
        uid,
        verdict.generation,
        conditions,
        synced=synced,
        total=sync.total,
        experiment=summary,
        experiments=entries,
    )


def provider_status(key: Key, verdict: ProviderVerdict, *, generation: int, uid: str = "") -> DesiredStatus:
    conditions = (_wanted("Accepted", verdict.accepted), _wanted("ResolvedRefs", verdict.resolved_refs))
    return DesiredStatus(key[0], key[1], key[2], uid, generation, conditions)


def spend_reported(spend: sp.PolicySpend) -> Wanted:
    """Whether the status's spend is shared and current. No time in the message: it would be a write per read."""
    if spend.state == "none":
        return Wanted(
            "SpendReported",
            "False",
            "NoLimitStore",
            "spend not shared (no limit store): each sidecar counts budgets in its own memory, so no total "
            "exists to report; give the controller --limits-redis-url to share the counters",
        )
    if spend.state == "unreachable":
        kept = f"the spend shown was read at {spend.read_at}" if spend.read_at else "no spend has been read yet"
        return Wanted(
            "SpendReported", "False", "StoreUnreachable", f"the limit store did not answer ({spend.problem}); {kept}"
        )
    message = "read from the shared limit store; written when it moves"
    if spend.partial:
        message += " (partial: more counters than one read takes; some subjects are missing)"
    return Wanted("SpendReported", "True", "Read", message)


def policy_status(
    key: Key, verdict: PolicyVerdict, *, uid: str = "", spend: sp.PolicySpend | None = None
) -> DesiredStatus:
    conditions: tuple[Wanted, ...] = (
        _wanted("Accepted", verdict.accepted),
        _wanted("ResolvedRefs", verdict.resolved_refs),
    )
    if spend is not None:
        conditions += (spend_reported(spend),)
    return DesiredStatus(key[0], key[1], key[2], uid, verdict.generation, conditions, spend=spend)


def spend_status(spend: sp.PolicySpend) -> PolicySpendStatus:
    return PolicySpendStatus(
        summary=sp.spend_column(spend),
        read_at=spend.read_at or None,
        budgets=tuple(
            BudgetSpendStatus.model_validate(
                {
                    "limit": b.limit,
                    "per": b.per,
                    "window": sp.WINDOW_WORDS[b.measure],
                    "period": b.window,
                    "budgetUSD": sp.usd(b.budget_micro_usd),
                    "spentUSD": sp.usd(b.spent_micro_usd),
                    "totalUSD": sp.usd(b.total_micro_usd),
                    "subjects": b.subjects,
                    "top": [{"subject": s, "spentUSD": sp.usd(m)} for s, m in b.top],
                }
            )
            for b in spend.budgets
        ),
    )


def desired_statuses(
    judgement: Judgement,
    sync: Mapping[Key, RouteSync],
    resources: Resources,
    *,
    memo: dict[object, Any] | None = None,
    spend: Mapping[Key, sp.PolicySpend] | None = None,
    experiments: Mapping[Key, ExperimentStatus] | None = None,
) -> dict[Key, DesiredStatus]:
    """Per object the judgement covers and the store still holds (a deleted one gets nothing).

    `memo` (a dict the caller keeps between calls) saves rebuilding what has not changed: an object's
    status is reused while its verdict and object are the very same and its counts are equal (the
    controller keeps the verdicts of unchanged namespaces), which matters with thousands of objects."""
    memo = {} if memo is None else memo
    present: Mapping[Key, Any] = resources.by_key  # the current version, where it is invalid
    if not present:  # a view made by hand
        present = {
            key_of(r): r for r in (*resources.routes, *resources.providers, *resources.policies, *resources.invalid)
        }
    out: dict[Key, DesiredStatus] = {}
    for key, route_verdict in judgement.routes.items():
        if (obj := present.get(key)) is not None:
            counts, restrictions = sync.get(key, NO_SYNC), judgement.restrictions.get(key, ())
            experiment = (experiments or {}).get(key)
            before = memo.get(key)
            if (
                before is not None
                and before[0] is route_verdict
                and before[1] is obj
                and before[2] == counts
                and before[3] == restrictions
                and before[5] == experiment
            ):
                out[key] = before[4]
                continue
            out[key] = route_status(
                key, route_verdict, counts, uid=obj.metadata.uid, restrictions=restrictions, experiments=experiment
            )
            memo[key] = (route_verdict, obj, counts, restrictions, out[key], experiment)
    for key, policy_verdict in judgement.policy_verdicts.items():
        if (obj := present.get(key)) is not None:
            out[key] = policy_status(key, policy_verdict, uid=obj.metadata.uid, spend=(spend or {}).get(key))
    for key, provider_verdict in judgement.providers.items():
        if (obj := present.get(key)) is not None:
            before = memo.get(key)
            if before is not None and before[0] is provider_verdict and before[1] is obj:
                out[key] = before[2]
                continue
            out[key] = provider_status(key, provider_verdict, generation=obj.metadata.generation, uid=obj.metadata.uid)
            memo[key] = (provider_verdict, obj, out[key])
    for gone in [k for k in memo if k not in out]:
        del memo[gone]
    return out


def _conditions_of(status: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    items = (status or {}).get("conditions") or []
    return {str(c.get("type")): c for c in items if isinstance(c, Mapping)}


def render(desired: DesiredStatus, previous: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
    """The status to apply: lastTransitionTime moves only when a condition's status does."""
    before = _conditions_of(previous)
    conditions = []
    for wanted in desired.conditions:
        old = before.get(wanted.type)
        since = (
            str(old["lastTransitionTime"])
            if (old is not None and old.get("status") == wanted.status and old.get("lastTransitionTime"))
            else now
        )
        conditions.append(
            Condition(
                type=wanted.type,
                status=wanted.status,
                reason=wanted.reason,
                message=wanted.message[:MAX_MESSAGE],
                observed_generation=desired.generation,
                last_transition_time=since,
            )
        )
    if desired.kind == "ModelRoute":
        status: ModelRouteStatus | ModelProviderStatus | ModelPolicyStatus = ModelRouteStatus(
            observed_generation=desired.generation,
            synced_sidecars=desired.synced or 0,
            total_sidecars=desired.total or 0,
            experiment=desired.experiment,
            experiments=desired.experiments or None,
            conditions=tuple(conditions),
        )
    elif desired.kind == "ModelProvider":
        status = ModelProviderStatus(observed_generation=desired.generation, conditions=tuple(conditions))
    else:
        status = ModelPolicyStatus(
            observed_generation=desired.generation,
            conditions=tuple(conditions),
            spend=spend_status(desired.spend) if desired.spend is not None else None,
        )
    return status.model_dump(by_alias=True, mode="json", exclude_none=True)


def timeless(status: Mapping[str, Any] | None) -> dict[str, Any]:
    """A status without its timestamps, for "is there anything to write?"."""
    body = {k: v for k, v in (status or {}).items() if k != "conditions"}
    body["conditions"] = sorted(
        ({k: v for k, v in c.items() if k != "lastTransitionTime"} for c in _conditions_of(status).values()),
        key=lambda c: str(c.get("type")),
    )
    return body


def condition_events(
    previous: Mapping[str, Any] | None,
    wanted: Sequence[Wanted],
    *,
    generation: int | None = None,
    sidecars: int | None = None,
) -> list[EventSpec]:
    """Events for transitions: Normal when a condition turns True, Warning when it turns False.

    A condition that stays False for a different reason is a new problem and warns again;
    one whose status and reason hold (a message with new counts, say) is no news. A route's
    new `generation` reaching all its sidecars is news even when Programmed was True before.

    Only news: a new object that is fine gets one Event, when its route reaches its sidecars
    (Programmed), not one per condition, and a rollout still under way (Pending) is progress, not
    a Warning. A new route that no connected sidecar runs (`sidecars`, the route's count, is 0)
    has reached nothing yet: its conditions say so and no Event repeats it (a fresh leader over
    5,000 routes in namespaces without sidecars would otherwise write 5,000 Events that say
    "0/0"). Nor is its first sidecar an Event: Programmed stays True and the counts are in its
    message and columns; as news, it would be one Event per route every time sidecars reconnect
    to a new leader. Likewise `SpendReported` is never an Event: whether the limit store answers is one
    fact for every budgeted policy, which the controller logs once.
    """
    before = _conditions_of(previous)
    events = []
    for condition in wanted:
        old = before.get(condition.type)
        if condition.reason == "Pending" or (
            old is None and condition.status == "True" and (condition.type != "Programmed" or sidecars == 0)
        ):
            continue
        if condition.type == "SpendReported":  # the store's state, not the policy's: logged once, not per policy
            continue
        unchanged = (
            old is not None
            and old.get("status") == condition.status
            and (condition.status == "True" or old.get("reason") == condition.reason)
        )
        new_generation_programmed = (
            old is not None
            and condition.type == "Programmed"
            and condition.status == "True"
            and generation is not None
            and old.get("observedGeneration") != generation
        )
        if unchanged and not new_generation_programmed:
            continue
        kind: Literal["Normal", "Warning"] = "Normal" if condition.status == "True" else "Warning"
        note = condition.message or f"{condition.type} is {condition.status}"
        events.append(EventSpec(kind, condition.reason, note, _ACTIONS.get(condition.type, "Reconcile")))
    return events


def experiment_events(previous: Mapping[str, Any] | None, entries: Sequence[Mapping[str, Any]]) -> list[EventSpec]:
    """Events for an experiment's moves of traffic: a promotion, a rollback, a rollout's next step, an
    adaptive rule's arm excluded by a guardrail.

    Compared with the status on the object, so a restarted or new leader that finds the move already
    written says nothing again."""
    before_entries = (previous or {}).get("experiments")
    before = {
        e.get("rule"): e for e in (before_entries if isinstance(before_entries, list) else ()) if isinstance(e, Mapping)
    }
    events = []
    for entry in entries:
        old = before.get(entry.get("rule"))
        if old is not None and old.get("experiment") != entry.get("experiment"):
            old = None  # an edited experiment starts afresh
        old = old or {}
        where = f"rule {entry.get('rule')}"
        if entry.get("promoted") and entry.get("promoted") != old.get("promoted"):
            why = "the rollout finished" if "rollout" in entry else f"it won on {entry.get('metric')}"
            note = f"{where}: arm {entry['promoted']} takes all the traffic ({why})"
            events.append(EventSpec("Normal", "ExperimentPromoted", note, "Promote"))
        if entry.get("rolledBack") and not old.get("rolledBack"):
            breach = entry.get("guardrail") or {}
            control = (entry.get("arms") or [{}])[0].get("name", "the control")
            note = (
                f"{where}: all traffic back to arm {control}: arm {breach.get('arm')} breached the "
                f"{breach.get('metric')} guardrail (estimate {breach.get('estimate', 0.0):+.4g}, "
                f"margin {breach.get('margin')})"
            )
            events.append(EventSpec("Warning", "ExperimentRolledBack", note, "RollBack"))
        was_out = {b.get("arm") for b in old.get("excluded") or () if isinstance(b, Mapping)}
        for breach in entry.get("excluded") or ():
            if isinstance(breach, Mapping) and breach.get("arm") not in was_out:
                note = (
                    f"{where}: arm {breach.get('arm')} gets no more traffic: it breached the {breach.get('metric')} "
                    f"guardrail (estimate {breach.get('estimate', 0.0):+.4g}, margin {breach.get('margin')})"
                )
                events.append(EventSpec("Warning", "ExperimentArmExcluded", note, "Exclude"))
        step, old_step = entry.get("rollout") or {}, old.get("rollout") or {}
        if entry.get("state") == "RollingOut" and old_step and step.get("step") != old_step.get("step"):
            note = f"{where}: the candidate's share is now {step.get('share')}% (step {step.get('step', 0) + 1})"
            events.append(EventSpec("Normal", "ExperimentStepAdvanced", note, "Advance"))
    return events


def describe(desired: DesiredStatus, condition: Wanted) -> str:
    """One log line: "ModelRoute default/chat: ResolvedRefs=False BackendNotFound: ..."."""
    where = f"{desired.namespace}/{desired.name}" if desired.namespace else desired.name
    text = f"{desired.kind} {where}: {condition.type}={condition.status} {condition.reason}"
    return f"{text}: {condition.message}" if condition.message else text
