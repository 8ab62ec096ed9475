"""The admit stage's gate: one request's limits, made by `proxy.request.admit.Admission.admit` for a request
some counter binds, asked by the attempt stage before each backend's first call, settled by the account stage.

Kept apart from `proxy.request.admit` so that the limits code it runs (`proxy.limits`) is loaded by the
snapshots that have limits or capacity (`proxy.runtime.Runtime.build`), not by every sidecar.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

from opentelemetry.trace import Span

from proxy.errors import ApiError
from proxy.limits import gate as rules
from proxy.limits.headers import Api, rate_limit_headers, refusal_error
from proxy.limits.model import Counter, CounterState, Decision, Demand, Reservation, Usage
from proxy.limits.slot import LimiterHandle
from proxy.policy.classify import Classification
from proxy.request.outcome import CLIENT_CLOSED, Outcome
from proxy.routing.table import Candidate, Plan
from proxy.runtime import Runtime
from proxy.snapshot import Backend

if TYPE_CHECKING:
    from proxy.request.admit import Admission

__all__ = ["GO", "SKIP", "Api", "Gate"]

GO: Literal[True] = True
SKIP: Literal[False] = False


class Gate:
    """One request's limits: made by `Admission.admit`, asked by the attempt stage, settled by the account stage."""

    __slots__ = (
        "_admission",
        "_api",
        "_classification",
        "_embeddings",
        "_handle",
        "_held",
        "_lease",
        "_model",
        "_plan",
        "_prompt_bytes",
        "_requested_output",
        "_rerouted",
        "_runtime",
        "_skipped",
        "_states",
    )

    def __init__(
        self,
        admission: Admission,
        *,
        runtime: Runtime,
        plan: Plan,
        classification: Classification,
        operation: str,
        model: str,
        api: Api,
        prompt_bytes: int,
        requested_output: int | None,
    ) -> None:
        self._admission = admission
        self._runtime = runtime
        self._plan = plan
        self._classification = classification
        self._model = model
        self._api = api
        self._embeddings = operation == "embeddings"
        self._prompt_bytes = prompt_bytes
        self._requested_output = requested_output
        self._lease = rules.lease_seconds(plan.rule.timeouts.total_seconds)
        self._handle: LimiterHandle | None = None
        self._held: dict[str, Reservation] = {}  # backend key -> what was reserved on it, not yet settled
        self._rerouted: set[str] = set()  # backends a spent budget sent the request to
        self._skipped: list[Decision] = []  # capacity refusals, for the 429 when every backend is out
        self._states: tuple[CounterState, ...] = ()  # the last admitted check: the answer's rate-limit headers

    def counters(self, backend: Backend) -> tuple[Counter, ...]:
        """What binds the request on `backend` (empty: no check needed)."""
        return self._runtime.limits.counters(
            self._plan.route.name, backend.provider, backend.model, rerouted=backend.key in self._rerouted
        )

    async def reserve(
        self, backend: Backend, counters: tuple[Counter, ...], *, span: Span
    ) -> bool | tuple[Candidate, ...]:
        """GO, SKIP (capacity spent), or the backends a spent budget reroutes to; raises the refusal."""
        handle = self._handle
        if handle is None:
            handle = self._handle = self._admission.slot.get(self._runtime.snapshot.limit_store)
            handle.acquire()
        decision = await handle.limiter.reserve(counters, self._demand(backend), lease_seconds=self._lease)
        if decision.store_unreachable:
            self._store_unavailable(decision)
        step = rules.step(decision)
        if step == "go":
            if decision.reservation is not None:
                self._held[backend.key] = decision.reservation
            self._states = decision.states
            return GO
        telemetry = self._admission.telemetry
        if step == "skip":
            self._skipped.append(decision)
            telemetry.metrics.capacity_skip(route=self._plan.route.name, backend=backend.key)
            return SKIP
        if step == "reroute":
            targets = self._reroute_targets(decision)
            if targets:
                self._rerouted.update(c.backend.key for c in targets)
                self._record(decision, span, audit="reroute", target=", ".join(c.backend.key for c in targets))
                return targets
        raise self._refusal(decision, span)

    def failed(self, backend: str) -> None:
        """The attempt stage leaves `backend` (it failed): its reservation is returned, charged nothing."""
        reservation = self._held.pop(backend, None)
        if reservation is not None and self._handle is not None and rules.changes_anything(reservation, rules.ZERO):
            self._admission.settle_later(self._handle, [(reservation, rules.ZERO)])

    def capacity_refusal(self, span: Span) -> ApiError | None:
        """When every backend was skipped for capacity and none was called: the 429 to answer."""
        if not self._skipped:
            return None
        return self._refusal(rules.soonest(self._skipped), span)

    def answer_headers(self) -> dict[str, str] | None:
        """The rate-limit headers for an admitted answer (the SDKs read them to pace themselves)."""
        if not self._states:
            return None
        return rate_limit_headers(self._states, api=self._api, now=time.time())

    def settle(self, outcome: Outcome) -> None:
        """Once per request, from the account stage: charge what it used, return the rest."""
        handle = self._handle
        if handle is None:
            return
        if self._held:
            items: list[tuple[Reservation, Usage]] = []
            for backend, reservation in self._held.items():
                if backend == outcome.backend:
                    usage = rules.settled_usage(reservation.demand, "answered", outcome.usage, outcome.cost)
                elif outcome.status == CLIENT_CLOSED:  # its call was under way when the client left
                    usage = rules.settled_usage(reservation.demand, "abandoned")
                else:
                    usage = rules.ZERO
                if rules.changes_anything(reservation, usage):
                    items.append((reservation, usage))
            self._held = {}
            if items:
                self._admission.settle_later(handle, items)
        self._handle = None
        handle.release()

    # --- the rest -----------------------------------------------------------------------------

    def _demand(self, backend: Backend) -> Demand:
        provider = self._runtime.providers.get(backend.provider)
        pricing = provider.pricing.get(backend.model) if provider is not None else None
        return rules.demand_for(
            prompt_bytes=self._prompt_bytes,
            requested_output=self._requested_output,
            pricing=pricing,
            embeddings=self._embeddings,
        )

    def _reroute_targets(self, decision: Decision) -> tuple[Candidate, ...]:
        """The cheaper backends a spent budget names, less those the snapshot cannot call or the policy took out."""
        removed = {backend.key for backend, _ in self._plan.removed}
        targets: list[Candidate] = []
        for target in decision.reroute_to:
            backend = Backend(provider=target.provider, model=target.model)
            if backend.provider in self._runtime.translators and backend.key not in removed:
                targets.append(Candidate(backend, True))
        return tuple(targets)

    def _refusal(self, decision: Decision, span: Span | None) -> ApiError:
        error = refusal_error(decision, api=self._api, now=time.time())
        state = decision.refusal
        if state is not None:
            counter = state.counter
            self._admission.telemetry.metrics.limit_refusal(
                route=self._plan.route.name, owner=counter.owner, name=counter.name, measure=counter.measure
            )
            self._record(decision, span, audit="refuse", target="")
        return error

    def _record(
        self, decision: Decision, span: Span | None, *, audit: Literal["refuse", "reroute"], target: str
    ) -> None:
        """The span event and the audit line of a refusal (or a budget's reroute)."""
        state = decision.refusal
        if state is None:
            return
        counter, telemetry = state.counter, self._admission.telemetry
        trace_id = ""
        if span is not None:
            telemetry.limit_refused_event(span, state)
            trace_id = telemetry.trace_id(span)
        what = f"limit {counter.name} ({counter.measure}) of {counter.owner}"
        reason = f"{what} refused the request" if audit == "refuse" else f"{what} is spent: rerouted to {target}"
        self._admission.audit.record(
            workload=self._runtime.snapshot.policy.workload,
            model=self._model,
            route=self._plan.route.name,
            data_class=self._classification.data_class,
            decision=audit,
            policies=(counter.owner,),
            reason=reason,
            trace_id=trace_id,
            limit=counter.name,
        )

    def _store_unavailable(self, decision: Decision) -> None:
        modes = {s.counter.failure_mode for s in decision.states if s.unreachable}
        for mode in sorted(modes):
            self._admission.telemetry.metrics.limit_store_unavailable(failure_mode=mode)
