"""The Anthropic front end's streams: internal chat.completion.chunk dicts -> Anthropic SSE events.

`AnthropicStreamEncoder` is what `AnthropicFrontend.stream_encoder()`
(`proxy.frontends.anthropic_messages`) hands the relay; it reads chunks as every
re-shaping encoder does (`proxy.frontends.chunk_encoder`). `stop_reason_for` is
shared with `render_message` (`proxy.frontends.anthropic_render`), so streamed and whole answers agree
on stop reasons. Pure: no sockets, no clock.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.errors import ApiError
from proxy.frontends.anthropic_errors import anthropic_error_body
from proxy.frontends.chunk_encoder import ChunkEncoder, as_dict
from proxy.providers.anthropic_convert import (
    MESSAGE_ID_PREFIX,
    anthropic_usage,
    is_int,
    message_id,
    stop_reason,
    tool_use_id,
)
from proxy.providers.base import ChatChunk
from proxy.sse import encode_event

# --- shared with render_message (proxy.frontends.anthropic_render) ----------------------------


def stop_reason_for(finish: Any, *, has_tool_calls: bool) -> str:
    reason = stop_reason(finish)
    # Some OpenAI-compatible servers say "stop" after tool calls; Anthropic clients look for tool_use.
    return "tool_use" if has_tool_calls and reason == "end_turn" else reason


# --- streaming: internal chunks -> Anthropic events --------------------------------------------


class AnthropicStreamEncoder(ChunkEncoder):
    """chat.completion.chunk dicts -> Anthropic SSE events.

    The first chunk opens the message. Text and each tool call become content
    blocks in arrival order; a new block closes the open one. Token counts
    arrive last on the internal side, so `message_start` says 0 for each count
    and the real numbers go in `message_delta` (cumulative, as Anthropic's are:
    input, cache writes and reads, output), whose counts the Anthropic SDKs take over.
    """

    def __init__(self) -> None:
        super().__init__()
        self._id = MESSAGE_ID_PREFIX + "gateway"
        self._next_index = 0
        self._open: int | None = None  # Anthropic index of the open block
        self._open_is_text = False
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool_calls index -> Anthropic block index

    def finish(self) -> bytes:
        out = bytearray(self._wind_up())
        usage = anthropic_usage(self._usage)
        reason = stop_reason_for(self._finish, has_tool_calls=bool(self._tool_blocks))
        out += _event(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None}, "usage": usage},
        )
        out += _event("message_stop", {"type": "message_stop"})
        return bytes(out)

    def error(self, error: ApiError) -> bytes:
        return _event("error", anthropic_error_body(error))

    def _start(self, chunk: ChatChunk) -> bytes:
        self._started = True
        if chunk.get("id"):
            self._id = message_id(chunk["id"])
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": chunk.get("model") or "",
            "stop_reason": None,
            "stop_sequence": None,
            "usage": anthropic_usage(None),  # every count 0: the real ones come in message_delta
        }
        return _event("message_start", {"type": "message_start", "message": message})

    def _text(self, text: str) -> bytes:
        out = bytearray()
        if self._open is None or not self._open_is_text:
            out += self._open_block({"type": "text", "text": ""}, is_text=True)
        out += self._delta(self._open_index(), {"type": "text_delta", "text": text})
        return bytes(out)

    def _tool_call(self, call: dict[str, Any]) -> bytes:
        out = bytearray()
        index = call.get("index", 0)
        position = index if is_int(index) else 0
        function = as_dict(call.get("function"))
        if position not in self._tool_blocks:
            call_id = call.get("id")
            if not isinstance(call_id, str) or not call_id:
                call_id = f"{self._id}_{position}"  # some servers omit it; the block needs one
            name = function.get("name") or ""
            block: dict[str, Any] = {"type": "tool_use", "id": tool_use_id(call_id), "name": name, "input": {}}
            out += self._open_block(block, is_text=False)
            self._tool_blocks[position] = self._open_index()
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            # OpenAI streams one call's arguments at a time; should a server interleave
            # calls, the delta still goes to the block it belongs to.
            out += self._delta(self._tool_blocks[position], {"type": "input_json_delta", "partial_json": arguments})
        return bytes(out)

    def _open_block(self, block: dict[str, Any], *, is_text: bool) -> bytes:
        out = self._close_open()
        self._open, self._open_is_text = self._next_index, is_text
        self._next_index += 1
        start = {"type": "content_block_start", "index": self._open, "content_block": block}
        return out + _event("content_block_start", start)

    def _close_open(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open = self._open, None
        return _event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _open_index(self) -> int:
        assert self._open is not None
        return self._open

    @staticmethod
    def _delta(index: int, delta: dict[str, Any]) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def _event(name: str, data: dict[str, Any]) -> bytes:
    return encode_event(orjson.dumps(data), event=name)
