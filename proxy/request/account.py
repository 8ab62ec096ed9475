"""Stage 6, account: the request's one `Outcome`, and everything that reads it.

Built once at the end of every request, whatever became of it, and handed as it is to the
telemetry (the server span's closing attributes and the metrics: `proxy.telemetry`), the audit
log (a policy's refusals and reroutes: `proxy.policy.audit`) and the access log
(`proxy.request.access_log`). The request's limits (`proxy.request.admit.Gate`) read it here too, to
charge what the request used and return the rest.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from opentelemetry.trace import Span

from proxy.errors import ApiError
from proxy.policy.audit import AuditLog
from proxy.policy.classify import Classification
from proxy.request.access_log import AccessLog
from proxy.request.outcome import NO_USAGE, NOTHING_FOUND, Attempt, Decision, Outcome
from proxy.request.relay import Answer
from proxy.routing.table import Plan, PolicyRefusal
from proxy.runtime import Runtime
from proxy.telemetry import Telemetry

if TYPE_CHECKING:
    from proxy.request.gate import Gate


class Accounting:
    def __init__(self, *, telemetry: Telemetry, audit: AuditLog, access_log: AccessLog) -> None:
        self._telemetry = telemetry
        self._audit = audit
        self._access_log = access_log

    def rejected(
        self,
        error: ApiError,
        *,
        operation: str,
        model: str,
        stream: bool,
        runtime: Runtime | None,
        classification: Classification | None,
        plan: Plan | None = None,
        started: float,
    ) -> Outcome:
        """A request turned away before it had a span: before a route was chosen (bad input, no
        configuration yet, a model no route serves: no request metrics, as no route saw it), or
        by the admit stage (`plan` given: counted on its route)."""
        decision: Decision = ""
        policies: tuple[str, ...] = ()
        reason = ""
        if plan is not None and classification is not None:
            decision, policies, reason = _decision(plan, classification)
        outcome = Outcome(
            operation=operation,
            model=model,
            stream=stream,
            workload=runtime.snapshot.policy.workload if runtime is not None else "",
            data_class=classification.data_class if classification is not None else "",
            route=plan.route.name if plan is not None else "",
            rule=plan.rule.name if plan is not None else "",
            decision=decision,
            backend=None,
            response_model=None,
            usage=NO_USAGE,
            cost=None,
            attempts=(),
            status=error.status,
            error_type=error.code or error.type,
            error_message=error.message,
            ttft=None,
            duration=time.perf_counter() - started,
            trace_id="",
            personal_data=classification.found if classification is not None else NOTHING_FOUND,
            policies=policies,
            policy_reason=reason,
        )
        self._record(outcome, span=None, runtime=runtime)
        return outcome

    def refused(
        self,
        span: Span,
        refusal: PolicyRefusal,
        *,
        operation: str,
        model: str,
        stream: bool,
        runtime: Runtime,
        classification: Classification,
        reason: str,
        started: float,
    ) -> Outcome:
        """The workload's policy left the request no backend: answered 403 under its own span."""
        outcome = Outcome(
            operation=operation,
            model=model,
            stream=stream,
            workload=runtime.snapshot.policy.workload,
            data_class=classification.data_class,
            route=refusal.route,
            rule="",
            decision="refuse",
            backend=None,
            response_model=None,
            usage=NO_USAGE,
            cost=None,
            attempts=(),
            status=403,
            error_type="policy_denied",
            error_message=reason,
            ttft=None,
            duration=time.perf_counter() - started,
            trace_id=self._telemetry.trace_id(span),
            policies=refusal.policies,
            policy_reason=reason,
            personal_data=classification.found,
        )
        self._record(outcome, span=span, runtime=runtime)
        return outcome

    def settled(
        self,
        span: Span,
        *,
        operation: str,
        model: str,
        stream: bool,
        runtime: Runtime,
        classification: Classification,
        plan: Plan,
        answer: Answer | None,
        attempts: list[Attempt],
        status: int,
        error_type: str | None,
        error_message: str,
        started: float,
        gate: Gate | None = None,
    ) -> Outcome:
        """A planned request, after its attempts: answered, failed, or left by its client."""
        decision, policies, reason = _decision(plan, classification)
        backend = cost = ttft = response_model = None
        usage = NO_USAGE
        redacted: Mapping[str, int] = NOTHING_FOUND
        redacted_by: tuple[str, ...] = ()
        if answer is not None:
            backend, usage, ttft, response_model = answer.backend, answer.usage, answer.ttft, answer.response_model
            cost = self._telemetry.backend(runtime, backend).cost(
                usage.input_tokens, usage.output_tokens, usage.cached_input_tokens, usage.cache_write_input_tokens
            )
            redacted, redacted_by = answer.redacted or NOTHING_FOUND, answer.redacted_by
        # Positional, in the fields' order: a call with 16 or more keywords makes CPython build a
        # dict of them (~1 us here), and this one is made for every request.
        outcome = Outcome(
            operation,
            model,
            stream,
            runtime.snapshot.policy.workload,
            classification.data_class,
            plan.route.name,  # route
            plan.rule.name,  # rule
            decision,
            backend,
            response_model,
            usage,
            cost,
            tuple(attempts),
            status,
            error_type,
            error_message,
            ttft,
            time.perf_counter() - started,  # duration
            self._telemetry.trace_id(span),
            classification.found,  # personal_data
            policies,
            reason,  # policy_reason
            redacted,
            redacted_by,
        )
        if gate is not None:
            gate.settle(outcome)  # in the background: the answer does not wait for the counters
        self._record(outcome, span=span, runtime=runtime)
        return outcome

    def _record(self, outcome: Outcome, *, span: Span | None, runtime: Runtime | None) -> None:
        self._telemetry.finish(span, outcome, runtime=runtime)
        if outcome.decision == "refuse" or outcome.decision == "reroute":
            self._audit.record(
                workload=outcome.workload,
                model=outcome.model,
                route=outcome.route,
                data_class=outcome.data_class,
                decision=outcome.decision,
                policies=outcome.policies,
                reason=outcome.policy_reason,
                trace_id=outcome.trace_id,
                redacted=outcome.redacted,
            )
        elif outcome.redacted:  # served, masked: a policy decision too
            self._audit.record(
                workload=outcome.workload,
                model=outcome.model,
                route=outcome.route,
                data_class=outcome.data_class,
                decision="redact",
                policies=outcome.redacted_by,
                reason=f"personal data masked for {outcome.backend}",
                trace_id=outcome.trace_id,
                redacted=outcome.redacted,
            )
        self._access_log.record(outcome)


def _decision(plan: Plan, classification: Classification) -> tuple[Decision, tuple[str, ...], str]:
    """allow, or reroute with the policies that took backends out and why (for the audit log)."""
    if not plan.removed:
        return "allow", (), ""
    reason = f"removed {plan.removed_why}"
    if classification.raised_because:
        reason = f"class raised: {classification.raised_because}; {reason}"
    return "reroute", plan.removed_policies, reason
