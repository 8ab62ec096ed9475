"""The guardrail checks of a request some guardrail applies to (`proxy.request.guard` decides whether one
does): the asking, the verdicts' telemetry and audit, the outcome, and the `StreamGuard` of a streamed
answer.

Kept apart from `proxy.request.guard` so that this code and the guardrail client, texts and window it
runs (`proxy.guardrails`) are loaded by the snapshots that have guardrails (`proxy.runtime.Runtime.build`),
not by every sidecar.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from opentelemetry.trace import Span

from proxy.errors import ApiError
from proxy.guardrails.client import Asked, Verdict
from proxy.guardrails.texts import (
    chunk_text,
    replace_request_texts,
    replace_response_texts,
    request_texts,
    response_texts,
    with_chunk_text,
)
from proxy.guardrails.window import Window
from proxy.providers.base import ChatChunk, ChatRequest
from proxy.request.relay import Answer, StreamStopped
from proxy.routing.table import Plan
from proxy.runtime import Runtime
from proxy.snapshot import Guardrail, GuardrailPhase

if TYPE_CHECKING:
    from proxy.request.guard import Guard

DENIED = "guardrail_denied"
UNAVAILABLE = "guardrail_unavailable"


async def checked_request(
    guard: Guard,
    guardrails: Sequence[Guardrail],
    *,
    runtime: Runtime,
    plan: Plan,
    span: Span,
    model: str,
    request: ChatRequest,
) -> ChatRequest:
    """`Guard.request` past its lookup: the request to send, its texts as a guardrail replaced them."""
    texts, places = request_texts(request)
    if not texts:
        return request
    check = Check(guard, runtime=runtime, plan=plan, span=span, model=model, phase="request")
    replaced = await check.run(guardrails, texts)
    return request if replaced is None else replace_request_texts(request, places, replaced)


async def checked_answer(
    guard: Guard,
    guardrails: Sequence[Guardrail],
    *,
    runtime: Runtime,
    plan: Plan,
    span: Span,
    model: str,
    answer: Answer,
) -> ApiError | None:
    """`Guard.answered` past its lookup: the error the app gets instead of the answer, or None."""
    data = answer.data
    texts = response_texts(data)
    if not texts:
        return None
    check = Check(guard, runtime=runtime, plan=plan, span=span, model=model, phase="response")
    try:
        replaced = await check.run(guardrails, texts)
    except ApiError as refused:
        answer.error_type, answer.error_message = refused.code or refused.type, refused.message
        return refused
    if replaced is not None:
        answer.data = replace_response_texts(data, replaced)
        answer.native_openai = False  # the provider's bytes are no longer the answer
    return None


class Check:
    """One request's checks in one phase: the asking, the verdicts' telemetry, the outcome."""

    __slots__ = ("_asked", "_guard", "_phase", "_plan", "_runtime", "_span")

    def __init__(
        self, guard: Guard, *, runtime: Runtime, plan: Plan, span: Span, model: str, phase: GuardrailPhase
    ) -> None:
        self._guard, self._runtime, self._plan, self._span, self._phase = guard, runtime, plan, span, phase
        workload = runtime.snapshot.policy.workload
        self._asked = Asked(phase=phase, model=model, route=plan.route.name, workload=workload)

    async def run(self, guardrails: Sequence[Guardrail], texts: list[str]) -> list[str] | None:
        """The replaced texts, or None when all allowed (or failed open). Raises ApiError."""
        started = time.perf_counter()
        verdicts = await self._guard.client().ask_all(guardrails, texts, self._asked)
        self._guard._telemetry.metrics.guardrail_latency(phase=self._phase, seconds=time.perf_counter() - started)
        for verdict in verdicts:
            self._record(verdict)
        for verdict in verdicts:
            if verdict.decision == "deny":
                raise ApiError(
                    400 if self._phase == "request" else 422,
                    f"guardrail {verdict.guardrail.name} denied this {_WHAT[self._phase]}: "
                    f"{verdict.reason or 'no reason given'}",
                    DENIED,
                    DENIED,
                )
        for verdict in verdicts:
            if verdict.decision == "error" and verdict.guardrail.failure_mode == "closed":
                raise ApiError(
                    503,
                    f"guardrail {verdict.guardrail.name} could not check this {_WHAT[self._phase]} "
                    f"({verdict.reason}) and its failure mode is closed; retry shortly",
                    "api_error",
                    UNAVAILABLE,
                )
        return next((v.texts for v in verdicts if v.decision == "replace"), None)

    def _record(self, verdict: Verdict) -> None:
        guardrail, phase = verdict.guardrail, self._phase
        decision: str = verdict.decision
        if decision == "error":
            decision = "error_open" if guardrail.failure_mode == "open" else "error_closed"
        telemetry = self._guard._telemetry
        telemetry.metrics.guardrail(guardrail=guardrail.name, phase=phase, decision=decision)
        if decision == "allow":
            return
        self._span.add_event(
            "modelway.guardrail",
            {
                "modelway.guardrail": guardrail.name,
                "modelway.guardrail.phase": phase,
                "modelway.guardrail.decision": decision,
                "modelway.guardrail.reason": verdict.reason,
                "modelway.guardrail.duration_s": round(verdict.seconds, 4),
            },
        )
        plan = self._plan
        self._guard._audit.record(
            workload=self._asked.workload,
            model=self._asked.model,
            route=plan.route.name,
            data_class=plan.data_class,
            decision="guardrail",
            policies=(guardrail.policy,) if guardrail.policy else (),
            reason=verdict.reason,
            trace_id=telemetry.trace_id(self._span),
            guardrail={"name": guardrail.name, "phase": phase, "decision": decision},
        )

    async def replaced_or_cut(self, guardrails: Sequence[Guardrail], window: Window) -> str:
        """A streamed window's check: the new text to send (as it came, or replaced). Raises ApiError."""
        checked, new = window.checked, window.new
        replaced = await self.run(guardrails, [checked + new])
        if replaced is None:
            return new
        text = replaced[0]
        if not text.startswith(checked):  # it rewrote what the app already has: that cannot be unsaid
            raise ApiError(
                422,
                "a guardrail replaced text of this answer that was already sent; the answer ends here",
                DENIED,
                DENIED,
            )
        return text[len(checked) :]


_WHAT = {"request": "request", "response": "answer"}


class StreamGuard:
    """One streamed attempt's checks: chunks in, the chunks the app may have now out.

    Chunks without text pass at once while nothing is held (the role chunk); once text is held,
    everything after it waits with it, so the app gets the stream in order. A check is due as the
    window says; an allow releases what was held, a replace releases it with the replaced text in
    its first content chunk, a deny raises StreamStopped: the relay sends what was allowed before
    the window, then the error.
    """

    __slots__ = ("_check", "_guardrails", "_held", "_window")

    def __init__(self, check: Check, guardrails: Sequence[Guardrail]) -> None:
        self._check, self._guardrails = check, guardrails
        # The most careful of the guardrails sets the window: the shortest step, the longest tail.
        self._window = Window(
            check_chars=min(g.stream_check_chars for g in guardrails),
            window_chars=max(g.stream_window_chars for g in guardrails),
        )
        self._held: list[ChatChunk] = []

    async def feed(self, chunks: list[ChatChunk]) -> list[ChatChunk]:
        released: list[ChatChunk] = []
        window = self._window
        for chunk in chunks:
            text = chunk_text(chunk)
            if not text and not self._held:
                released.append(chunk)
                continue
            self._held.append(chunk)  # (a new list after each check)
            if window.add(text):
                try:
                    released += await self._checked()
                except ApiError as error:  # what was allowed before this window still goes out
                    raise StreamStopped(error, released) from None
        return released

    async def finish(self) -> list[ChatChunk]:
        """At the stream's end: the last check, and everything still held."""
        try:
            released = await self._checked() if self._window.pending else []
        except ApiError as error:
            raise StreamStopped(error, []) from None
        released += self._held
        self._held = []
        return released

    async def _checked(self) -> list[ChatChunk]:
        new = self._window.new
        text = await self._check.replaced_or_cut(self._guardrails, self._window)
        held, self._held = self._held, []
        if text != new:
            first = True
            for index, chunk in enumerate(held):
                if chunk_text(chunk):
                    held[index] = with_chunk_text(chunk, text if first else "")
                    first = False
        self._window.allow(text)
        return held
