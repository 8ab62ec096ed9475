"""Anthropic's `POST /v1/messages/count_tokens`, answered by the backend that would serve the call.

The body is an Anthropic Messages request without `max_tokens`; it goes the way a messages call
goes (classify, plan, policy, masking), and the plan's backend counts it with its own endpoint:
Anthropic's count_tokens, Claude on Vertex's count-tokens:rawPredict, Gemini's (and Vertex
Gemini's) countTokens, or Bedrock's CountTokens (for the Converse or the InvokeModel call); the
same answer shape for the app. A backend with no counting endpoint (OpenAI, Azure OpenAI,
OpenAI-compatible) is a 400 naming it: a guess from another vendor's tokenizer would be a number
apps budget with, and wrong.

The count is of the internal form translated for that backend, as a translated call would send it:
messages, system prompt, tools and tool choice. What the internal form does not carry is not in it
(`thinking` settings, `cache_control` marks, fields a same-API call passes through), so for a call
that uses them the count can differ from what that call is billed. Counting consumes no tokens: its
usage is zero, so limits and budgets charge nothing but the request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from aiohttp import web
from opentelemetry.trace import Span

from proxy.errors import ApiError, bad_request
from proxy.frontends.anthropic_messages import parse_messages_request
from proxy.frontends.base import ParsedChat
from proxy.providers.base import ChatRequest, Translator, UnsupportedOperation, UpstreamRequest, Usage
from proxy.request.attempt import Attempts, Call
from proxy.request.outcome import Attempt
from proxy.request.redact import masking_for
from proxy.request.relay import Answer, ParseBody
from proxy.request.responses import json_response
from proxy.routing.table import Plan
from proxy.runtime import Runtime

if TYPE_CHECKING:  # loaded with the snapshots that have limits (proxy.runtime)
    from proxy.request.gate import Gate

OPERATION = "count_tokens"


@runtime_checkable
class TokenCounter(Protocol):
    """A translator whose provider has a token counting endpoint."""

    def count_tokens_request(self, request: ChatRequest, *, model: str) -> UpstreamRequest: ...

    def count_tokens_response(self, body: bytes) -> int: ...


def parse_count_tokens(body: Any) -> ParsedChat:
    """A count_tokens body checked as the messages request it counts (which needs `max_tokens`)."""
    if isinstance(body, dict) and "max_tokens" in body:
        raise bad_request("max_tokens: Extra inputs are not permitted", param="max_tokens")
    if isinstance(body, dict) and body.get("stream") is not None:
        raise bad_request("stream: Extra inputs are not permitted", param="stream")
    parsed = parse_messages_request({**body, "max_tokens": 1} if isinstance(body, dict) else body)
    request = dict(parsed.request)
    del request["max_completion_tokens"]  # the placeholder: count_tokens has no output bound
    return ParsedChat(model=parsed.model, stream=False, request=request)


def _counter(translator: Translator, provider: str) -> TokenCounter:
    if not isinstance(translator, TokenCounter):
        raise UnsupportedOperation(
            f"{translator.system} backend {provider!r} cannot count tokens; "
            "only anthropic, gemini, vertex and bedrock backends have a counting endpoint"
        )
    return translator


def counting(
    parsed: ParsedChat, *, attempts: Attempts, unary: Callable[[Plan, ParseBody], Call]
) -> Callable[[Runtime, Plan, Span, list[Attempt], Gate | None], Awaitable[tuple[web.StreamResponse, Answer]]]:
    """The serve step of `proxy.request.flow.RequestPath` for one count_tokens request."""

    def read(translator: Translator, raw: bytes, model: str) -> tuple[dict[str, Any], Usage]:
        counted = _counter(translator, model).count_tokens_response(raw)
        return {"input_tokens": counted}, Usage(input_tokens=0, output_tokens=0)

    async def serve(
        runtime: Runtime, plan: Plan, span: Span, made: list[Attempt], gate: Gate | None
    ) -> tuple[web.StreamResponse, Answer]:
        first = plan.candidates[0].backend if plan.candidates else None
        if first is not None:  # the backend that would serve the call must count it, not a fallback
            try:
                _counter(runtime.translators[first.provider], first.provider)
            except UnsupportedOperation as exc:
                raise ApiError(400, str(exc), "invalid_request_error", "count_tokens_unsupported") from None
        masking = masking_for(runtime, plan)
        answer = await attempts.run(
            runtime=runtime,
            plan=plan,
            model=parsed.model,
            operation=OPERATION,
            server_span=span,
            build=lambda t, b: _counter(t, b.provider).count_tokens_request(
                masking.request_for(b.key, parsed.request), model=b.model
            ),
            call=unary(plan, read),
            made=made,
            gate=gate,
        )
        headers = gate.answer_headers() if gate is not None else None
        return json_response(answer.data, headers=headers), answer

    return serve


class TokenCounting:
    """This endpoint's code as `proxy.request.flow.RequestPath.count_tokens` calls it: this module (and the
    Anthropic front end it parses with) is imported by the first count_tokens request (`proxy.server`)."""

    __slots__ = ()
    operation = OPERATION
    parse = staticmethod(parse_count_tokens)
    serve = staticmethod(counting)
