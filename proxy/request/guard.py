"""Guardrails on the request path: after plan, before the attempts (`proxy.request.flow`).

The request phase asks the route's guardrails about the messages' text, all at once, each within
its timeout: a deny answers 400 (`guardrail_denied`, the guardrail's reason), a replace sends the
replaced texts on, a failure lets the request on (failure mode open, counted) or answers 503
naming the guardrail (closed). The response phase asks about the answer: a whole answer before
the app gets it (a deny: 422 `guardrail_denied` instead of the answer; the request was fine, the
answer is what was refused), a stream in a sliding window (`proxy.guardrails.window`) by a
`StreamGuard` the relay hands its chunks to: what is held back is only the window's unchecked
text, and a deny ends the stream with an error event in the app's API. This module only looks the
route's guardrails up; the checks are `proxy.request.guarded`'s, loaded with the snapshots that have
guardrails.

Several guardrails answering differently: a deny wins, then a closed failure, then the first
replace in the policies' order (the others' replacements are dropped: they judged the same
original text). Each verdict is counted (`modelway.guardrail.decisions`), each check's added
latency timed (`modelway.guardrail.duration`), each verdict but allow is a span event and an
audit line. The answer's guardrails see it as the provider sent it (masked values stay masked).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.trace import Span

from proxy.errors import ApiError
from proxy.http_client import HttpClient
from proxy.policy.audit import AuditLog
from proxy.providers.base import ChatRequest
from proxy.request.relay import Answer
from proxy.routing.table import Plan
from proxy.runtime import Runtime
from proxy.telemetry import Telemetry

if TYPE_CHECKING:
    from proxy.guardrails.client import GuardrailClient
    from proxy.request.guarded import StreamGuard


class Guard:
    """The guardrail stage, once per sidecar."""

    def __init__(self, *, client: HttpClient, telemetry: Telemetry, audit: AuditLog) -> None:
        self._http = client
        self._client: GuardrailClient | None = None
        self._telemetry = telemetry
        self._audit = audit

    def client(self) -> GuardrailClient:
        """The guardrail client, made for the first check (its code loaded with the first snapshot that
        has guardrails, by `Runtime.build`: the imports of `proxy.request.guarded` are lookups then)."""
        if self._client is None:
            from proxy.guardrails.client import GuardrailClient

            self._client = GuardrailClient(client=self._http)
        return self._client

    async def request(
        self, *, runtime: Runtime, plan: Plan, span: Span, model: str, request: ChatRequest
    ) -> ChatRequest:
        """The request to send: `request`, or its texts as a guardrail replaced them. Raises ApiError."""
        guardrails = runtime.guardrails.pick(plan.route.name, plan.data_class, "request")
        if not guardrails:
            return request
        from proxy.request.guarded import checked_request

        return await checked_request(
            self, guardrails, runtime=runtime, plan=plan, span=span, model=model, request=request
        )

    async def answered(
        self, *, runtime: Runtime, plan: Plan, span: Span, model: str, answer: Answer
    ) -> ApiError | None:
        """A whole answer, checked before the app gets it: the error the app gets instead (the answer
        stays accounted for: the provider answered), or None, its data replaced in place when a
        guardrail replaced its text."""
        guardrails = runtime.guardrails.pick(plan.route.name, plan.data_class, "response")
        if not guardrails:
            return None
        from proxy.request.guarded import checked_answer

        return await checked_answer(self, guardrails, runtime=runtime, plan=plan, span=span, model=model, answer=answer)

    def stream(self, *, runtime: Runtime, plan: Plan, span: Span, model: str) -> StreamGuard | None:
        """A new StreamGuard for one streamed attempt, or None when no guardrail checks answers."""
        guardrails = runtime.guardrails.pick(plan.route.name, plan.data_class, "response")
        if not guardrails:
            return None
        from proxy.request.guarded import Check, StreamGuard

        check = Check(self, runtime=runtime, plan=plan, span=span, model=model, phase="response")
        return StreamGuard(check, guardrails)
