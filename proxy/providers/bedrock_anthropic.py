"""Anthropic models on Amazon Bedrock through InvokeModel, with Anthropic's own Messages body.

For a provider with `bedrock.api: anthropic-messages`. The body is the Anthropic Messages request
(`anthropic_request.messages_body`) as Bedrock takes it: no `model` (the URL names it), no
`stream` (the operation says it), and `anthropic_version: bedrock-2023-05-31`. It goes to
`POST {base}/model/{modelId}/invoke` or `/invoke-with-response-stream`, signed like every Bedrock
call (`proxy.providers.bedrock_endpoint`). The answer is an Anthropic message, read as from
Anthropic's API (`proxy.providers.anthropic`); a stream is AWS event-stream messages of type
`chunk` whose payload `{"bytes": <base64>}` is one Anthropic stream event, each handed to the
Anthropic stream decoder (Bedrock's extra `amazon-bedrock-invocationMetrics` is not read).

What Converse cannot carry and Anthropic's body can (its tool and content block types, stop
sequences reported as such) crosses here as it does to Anthropic's own API. An app on the Messages
API itself has its body sent as it is (`passthrough_request`: `model` and `stream` taken out,
`anthropic_version` added, the app's `anthropic-beta` header as `anthropic_beta`), and each streamed
event handed back as Anthropic SSE (`RawEventDecoder` behind `InvokeStreamDecoder`).

`cache_control`: kept as the app sent it on that pass-through (Bedrock caches as Anthropic does). An
Anthropic request translated through the internal form (its texts masked or replaced) gets it back
from the internal form's breakpoint marks (`proxy.providers.anthropic_request`); an OpenAI app's has
none.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

import orjson

from proxy.providers.anthropic_answer import chat_completion
from proxy.providers.anthropic_events import AnthropicStreamDecoder, RawEventDecoder
from proxy.providers.anthropic_request import messages_body
from proxy.providers.aws_eventstream import EventStreamDecoder
from proxy.providers.base import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    StreamState,
    UnsupportedOperation,
    UpstreamProtocolError,
    UpstreamRequest,
    Usage,
    json_body,
)
from proxy.providers.bedrock_endpoint import BedrockTranslatorBase, count_tokens_answer, event_type, invoke_count_body
from proxy.providers.openai import load_json_object
from proxy.sse import DEFAULT_MAX_EVENT_BYTES

ANTHROPIC_ON_BEDROCK = "bedrock-2023-05-31"


def invoke_body(request: ChatRequest, *, model: str) -> bytes:
    body = messages_body(request, model=model, stream=False)
    body.pop("model", None)
    body.pop("stream", None)
    body["anthropic_version"] = ANTHROPIC_ON_BEDROCK
    return json_body(body)


class InvokeStreamDecoder:
    """InvokeModelWithResponseStream: event-stream `chunk` messages, each one Anthropic stream event."""

    def __init__(
        self, *, model: str, created: int, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES, passthrough: bool = False
    ) -> None:
        """`passthrough`: hand on each Anthropic event itself (`RawEvent`), for an Anthropic client."""
        self._frames = EventStreamDecoder(max_message_bytes=max_event_bytes)
        events = AnthropicStreamDecoder(model=model, created=created, max_event_bytes=max_event_bytes)
        self._events: AnthropicStreamDecoder | RawEventDecoder = (
            RawEventDecoder(events, max_event_bytes) if passthrough else events
        )
        self.state: StreamState = self._events.state

    def feed(self, data: bytes) -> list[ChatChunk]:
        chunks: list[ChatChunk] = []
        for message in self._frames.feed(data):
            if event_type(message) != "chunk":
                continue
            payload = load_json_object(message.payload, "stream chunk")
            encoded = payload.get("bytes")
            if not isinstance(encoded, str):
                raise UpstreamProtocolError("stream chunk has no bytes string")
            try:
                event = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise UpstreamProtocolError("stream chunk bytes are not base64") from None
            if b"\n" in event or b"\r" in event:  # one SSE data line: the event's JSON without line breaks
                event = orjson.dumps(load_json_object(event, "stream chunk event"))
            chunks.extend(self._events.feed(b"data: " + event + b"\n\n"))
        return chunks

    def close(self) -> list[ChatChunk]:
        self._frames.close()
        return self._events.close()


class BedrockAnthropicTranslator(BedrockTranslatorBase):
    passthrough_api = "anthropic"  # an Anthropic Messages request goes into InvokeModel as the app wrote it

    def chat_request(self, request: ChatRequest, *, model: str, stream: bool) -> UpstreamRequest:
        operation = "invoke-with-response-stream" if stream else "invoke"
        return self._endpoint.request(model, operation, invoke_body(request, model=model), stream=stream)

    def passthrough_request(
        self, body: dict[str, Any], *, model: str, stream: bool, headers: dict[str, str]
    ) -> UpstreamRequest:
        """The app's Messages body as InvokeModel takes it: every field as sent, but `model` (the URL
        names it) and `stream` (the operation says it); `anthropic-beta` becomes `anthropic_beta`."""
        out = {key: value for key, value in body.items() if key not in ("model", "stream")}
        out.setdefault("anthropic_version", ANTHROPIC_ON_BEDROCK)
        if (beta := headers.get("anthropic-beta")) and "anthropic_beta" not in out:
            out["anthropic_beta"] = [name.strip() for name in beta.split(",") if name.strip()]
        operation = "invoke-with-response-stream" if stream else "invoke"
        return self._endpoint.request(model, operation, json_body(out), stream=stream)

    def passthrough_decoder(self, *, model: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> InvokeStreamDecoder:
        return InvokeStreamDecoder(
            model=model, created=int(time.time()), max_event_bytes=max_event_bytes, passthrough=True
        )

    def count_tokens_request(self, request: ChatRequest, *, model: str) -> UpstreamRequest:
        """CountTokens (`POST /model/{modelId}/count-tokens`) for the InvokeModel call `chat_request` would send."""
        return self._endpoint.request(
            model, "count-tokens", invoke_count_body(invoke_body(request, model=model)), stream=False
        )

    def count_tokens_response(self, body: bytes) -> int:
        return count_tokens_answer(body)

    def chat_response(self, body: bytes) -> tuple[ChatResponse, Usage]:
        return chat_completion(load_json_object(body, "response"), created=int(time.time()))

    def stream_decoder(self, *, model: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> InvokeStreamDecoder:
        return InvokeStreamDecoder(model=model, created=int(time.time()), max_event_bytes=max_event_bytes)

    def embeddings_request(self, request: EmbeddingsRequest, *, model: str) -> UpstreamRequest:
        raise UnsupportedOperation("Anthropic models have no embeddings")

    def embeddings_response(self, body: bytes, *, model: str) -> tuple[EmbeddingsResponse, Usage]:
        raise UnsupportedOperation("Anthropic models have no embeddings")
