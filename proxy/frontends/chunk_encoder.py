"""What the stream encoders of the non-OpenAI front ends share: reading the internal chunk stream.

The Anthropic (`proxy.frontends.anthropic_stream`) and Responses (`proxy.frontends.openai_responses_stream`)
encoders both re-shape chat.completion.chunk dicts into another API's events. `ChunkEncoder.encode`
reads a chunk the same way for both: the first chunk opens the answer, usage is kept for the end, and
the first choice's text, refusal and tool calls become the subclass's events in arrival order (the
other choices are dropped: those APIs have one answer). Pure: no sockets, no clock.
"""

from __future__ import annotations

from typing import Any

from proxy.providers.base import ChatChunk


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class ChunkEncoder:
    """The reading half of a stream encoder; subclasses write the events (`_start`, `_text`,
    `_tool_call`, `_close_open`) and `finish` / `error`."""

    def __init__(self) -> None:
        self._started = False
        self._finish: Any = None  # the first choice's finish_reason, once sent
        self._usage: Any = None  # the last usage object seen (usage comes last on the internal side)

    def encode(self, chunk: ChatChunk) -> bytes:
        out = bytearray()
        if not self._started:
            out += self._start(chunk)
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        self._read(chunk)
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # one answer per response; the relay never asks for more
            delta = as_dict(choice.get("delta"))
            for field in ("content", "refusal"):
                if isinstance(delta.get(field), str) and delta[field]:
                    out += self._text(delta[field])
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    out += self._tool_call(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return bytes(out)

    def _wind_up(self) -> bytes:
        """What an ending writes first: the opening, if no chunk came, and the close of the open block."""
        out = b"" if self._started else self._start({})
        return out + self._close_open()

    # --- for subclasses --------------------------------------------------------------------------

    def _read(self, chunk: ChatChunk) -> None:
        """Anything else a chunk carries that the encoder keeps (after usage, before the choices)."""

    def _start(self, chunk: ChatChunk) -> bytes:
        raise NotImplementedError

    def _text(self, text: str) -> bytes:
        raise NotImplementedError

    def _tool_call(self, call: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def _close_open(self) -> bytes:
        raise NotImplementedError
