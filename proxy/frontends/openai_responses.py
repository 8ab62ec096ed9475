"""The OpenAI Responses API as an inbound API: `POST /v1/responses` for apps on the OpenAI SDK's
`client.responses` (and the OpenAI Agents SDK).

A backend that serves the Responses API itself (`openai`, `azure-openai`: the provider table's
`responses` operation) gets the app's body as sent and the app gets its answer as sent
(`proxy.request.passthrough`, which reads the provider's answer through `passthrough_answer` and
`passthrough_events`: `proxy.providers.openai_responses`). For any other backend requests
are validated and turned into the internal (OpenAI Chat Completions) form; answers are turned back
into `response` objects, and streams into the Responses events by
`proxy.frontends.openai_responses_stream`.

What only a provider that keeps state or runs tools can do (`previous_response_id`,
`conversation`, `store: true`, `background`, `prompt` templates, stored items by reference,
built-in tools, files by id or URL) cannot be translated: such a request goes only to backends that
serve the Responses API, and when none of its backends does (or the one left is another), it is a
400 naming the field rather than an answer that silently ignores it (`provider_only`).

Knowingly lossy: reasoning items in `input` (the chat form has no place for them; dropped),
`include`, `truncation`, `max_tool_calls`, `metadata` and `stream_options` (accepted, not sent on).

A `ResponsesFrontend` is made per request: the response object echoes the request's parameters
(instructions, tools, sampling), which `parse_chat` keeps for `render_chat` and the stream encoder.
"""

from __future__ import annotations

from typing import Any

import msgspec

from proxy.errors import ApiError
from proxy.frontends.base import ParsedChat
from proxy.frontends.chunk_encoder import as_dict
from proxy.frontends.openai_chat import openai_error_body
from proxy.frontends.openai_responses_request import PROVIDER_ONLY, parse_responses_request, sketch
from proxy.frontends.openai_responses_stream import ResponsesStreamEncoder, item_suffix, response_object
from proxy.providers.base import ChatResponse, StreamDecoder, Usage
from proxy.providers.openai_responses import ResponsesEventDecoder, responses_answer, stream_error
from proxy.sse import DEFAULT_MAX_EVENT_BYTES


class ResponsesFrontend:
    """One request's front end (see the module doc: it keeps what the answer echoes)."""

    api = "openai-responses"

    def __init__(self) -> None:
        self.echo: dict[str, Any] = {}
        # Why the request cannot be translated (it needs a backend that serves the Responses API), or None.
        self.provider_only: ApiError | None = None

    def parse_chat(self, body: Any) -> ParsedChat:
        try:
            parsed, self.echo = parse_responses_request(body)
        except ApiError as error:
            if error.code != PROVIDER_ONLY:
                raise
            self.provider_only = error
            parsed, self.echo = sketch(body, error)
        # the app's body, for a backend that serves the Responses API itself
        return msgspec.structs.replace(parsed, original=body)

    def render_chat(self, response: ChatResponse) -> dict[str, Any]:
        return render_response(response, self.echo)

    def stream_encoder(self, *, include_usage: bool) -> ResponsesStreamEncoder:
        return ResponsesStreamEncoder(self.echo)

    def error_body(self, error: ApiError) -> dict[str, Any]:
        return openai_error_body(error)

    # The provider's own answers, read on the same-API pass-through (`proxy.request.passthrough`):
    # they load with this front end, not with every sidecar.

    def passthrough_answer(self, body: bytes) -> tuple[ChatResponse, Usage]:
        return responses_answer(body)

    def passthrough_events(self, *, model: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> StreamDecoder:
        return ResponsesEventDecoder(max_event_bytes=max_event_bytes)

    def passthrough_error(self, error: ApiError) -> bytes:
        return stream_error(error)


# --- answer: internal -> Responses ----------------------------------------------------------------


def render_response(response: ChatResponse, echoed: dict[str, Any]) -> dict[str, Any]:
    suffix = item_suffix(response.get("id"))
    choices = response.get("choices") or []
    choice = as_dict(choices[0]) if choices else {}
    message = as_dict(choice.get("message"))
    output: list[dict[str, Any]] = []
    text, refusal = message.get("content"), message.get("refusal")
    parts: list[dict[str, Any]] = []
    if isinstance(text, str) and text:
        parts.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if isinstance(refusal, str) and refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    if parts:
        output.append(
            {"type": "message", "id": f"msg_{suffix}", "status": "completed", "role": "assistant", "content": parts}
        )
    for i, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        output.append(
            {
                "type": "function_call",
                "id": f"fc_{suffix}_{i}",
                "call_id": call.get("id") or f"call_{suffix}_{i}",
                "name": function.get("name") or "",
                "arguments": function.get("arguments") or "",
                "status": "completed",
            }
        )
    return response_object(
        response_id=f"resp_{suffix}",
        created=response.get("created"),
        model=response.get("model"),
        echoed=echoed,
        output=output,
        usage=response.get("usage"),
        finish_reason=choice.get("finish_reason"),
    )
