"""The interface of an inbound API (what apps call): parse into the internal form, render back.

The internal form is the OpenAI Chat Completions shape (see proxy.providers.base).
Front ends are pure: no sockets, no clock.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from proxy.errors import ApiError
from proxy.providers.base import ChatChunk, ChatRequest, ChatResponse


class ParsedChat(msgspec.Struct, frozen=True):
    model: str  # the model name the app asked for (a route)
    stream: bool
    request: ChatRequest  # internal form, `model` still the app's name
    include_usage: bool = False  # OpenAI streams: did the client ask for the usage chunk
    # The app's body as sent, for a backend that speaks the same API (`proxy.request.passthrough`).
    original: dict[str, Any] | None = None


class StreamEncoder(Protocol):
    def encode(self, chunk: ChatChunk) -> bytes:
        """Bytes to send the client for one internal chunk (may be empty)."""
        ...

    def finish(self) -> bytes:
        """Bytes that end a stream that completed normally."""
        ...

    def error(self, error: ApiError) -> bytes:
        """Bytes that end a stream that failed after it started."""
        ...


class ErrorShape(Protocol):
    """An inbound API's errors: what the sidecar needs to turn a request away in the API's shape,
    also before (or without) loading its front end."""

    api: str

    def error_body(self, error: ApiError) -> dict[str, Any]: ...


class Frontend(ErrorShape, Protocol):
    def parse_chat(self, body: Any) -> ParsedChat:
        """Validate an inbound body; raise ApiError(400) naming what is wrong."""
        ...

    def render_chat(self, response: ChatResponse) -> dict[str, Any]: ...

    def stream_encoder(self, *, include_usage: bool) -> StreamEncoder: ...
