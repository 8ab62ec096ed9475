"""The Responses front end's streams: internal chat.completion.chunk dicts -> Responses API events.

`ResponsesStreamEncoder` is what `ResponsesFrontend.stream_encoder()` (`proxy.frontends.openai_responses`)
hands the relay. `response_object` is shared with that module's `render_response`, so streamed and
whole answers agree. Pure: no sockets, no clock.

Events, each `event: <type>` with a JSON `data` holding the same `type` and a `sequence_number`
counting from 0: `response.created` and `response.in_progress` first; then, per output item in
arrival order, `response.output_item.added`, for text `response.content_part.added`,
`response.output_text.delta`..., `response.output_text.done`, `response.content_part.done`, for
function calls `response.function_call_arguments.delta`..., `response.function_call_arguments.done`,
and `response.output_item.done`; last `response.completed` (or `response.incomplete` when the
output bound or a content filter cut the answer) with the whole response and its usage. A stream
that fails after it began ends with `error` and `response.failed`.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from proxy.errors import ApiError
from proxy.frontends.chunk_encoder import ChunkEncoder, as_dict
from proxy.providers.base import ChatChunk
from proxy.sse import encode_event

_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def item_suffix(chat_id: Any) -> str:
    """The part of a chat completion id the response's ids are made from."""
    text = chat_id if isinstance(chat_id, str) and chat_id else "gateway"
    text = text.removeprefix("chatcmpl-").removeprefix("chatcmpl_")
    return _ID_CHARS.sub("", text)[:64] or "gateway"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def responses_usage(usage: Any) -> dict[str, Any] | None:
    """Chat usage -> Responses usage (None when the provider reported none)."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    cached = _int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
    reasoning = _int(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": _int(usage.get("total_tokens")) or prompt + completion,
    }


def response_object(
    *,
    response_id: str,
    created: Any,
    model: Any,
    echoed: dict[str, Any],
    output: list[dict[str, Any]],
    usage: Any,
    finish_reason: Any,
    status: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    incomplete = _INCOMPLETE.get(finish_reason) if isinstance(finish_reason, str) else None
    if status is None:
        status = "incomplete" if incomplete else "completed"
    return {
        "id": response_id,
        "object": "response",
        "created_at": created if isinstance(created, (int, float)) and not isinstance(created, bool) else 0,
        "status": status,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete and status == "incomplete" else None,
        "instructions": echoed.get("instructions"),
        "max_output_tokens": echoed.get("max_output_tokens"),
        "model": model if isinstance(model, str) else "",
        "output": output,
        "parallel_tool_calls": echoed.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": echoed.get("reasoning") or {"effort": None, "summary": None},
        "store": False,  # nothing is kept: see proxy.frontends.openai_responses
        "temperature": echoed.get("temperature"),
        "text": echoed.get("text") or {"format": {"type": "text"}},
        "tool_choice": echoed.get("tool_choice", "auto"),
        "tools": echoed.get("tools") or [],
        "top_p": echoed.get("top_p"),
        "truncation": "disabled",
        "usage": responses_usage(usage),
        "user": echoed.get("user"),
        "metadata": echoed.get("metadata") or {},
    }


class _Item:
    """One output item being streamed: a message (text) or a function call."""

    __slots__ = ("arguments", "call_id", "id", "index", "kind", "name", "text")

    def __init__(self, *, kind: str, index: int, item_id: str, call_id: str = "", name: str = "") -> None:
        self.kind, self.index, self.id = kind, index, item_id
        self.call_id, self.name = call_id, name
        self.text: list[str] = []  # text, or the call's argument pieces
        self.arguments = self.text

    def done(self) -> dict[str, Any]:
        if self.kind == "message":
            part = {"type": "output_text", "text": "".join(self.text), "annotations": [], "logprobs": []}
            return {"type": "message", "id": self.id, "status": "completed", "role": "assistant", "content": [part]}
        return {
            "type": "function_call",
            "id": self.id,
            "call_id": self.call_id,
            "name": self.name,
            "arguments": "".join(self.arguments),
            "status": "completed",
        }


class ResponsesStreamEncoder(ChunkEncoder):
    """chat.completion.chunk dicts -> Responses events (see the module doc for their order)."""

    def __init__(self, echoed: dict[str, Any]) -> None:
        super().__init__()
        self._echoed = echoed
        self._sequence = 0
        self._suffix = "gateway"
        self._created: Any = 0
        self._model: Any = ""
        self._items: list[_Item] = []
        self._open: _Item | None = None
        self._calls: dict[int, _Item] = {}  # chat tool_calls index -> its item

    def _read(self, chunk: ChatChunk) -> None:
        if isinstance(chunk.get("model"), str) and chunk["model"]:
            self._model = chunk["model"]

    def finish(self) -> bytes:
        out = bytearray(self._wind_up())
        response = self._response(status=None)
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        out += self._event(kind, {"response": response})
        return bytes(out)

    def error(self, error: ApiError) -> bytes:
        out = bytearray()
        if not self._started:
            out += self._start({})
        out += self._event("error", {"code": error.code, "message": error.message, "param": error.param})
        failed = self._response(status="failed", error={"code": error.code or "server_error", "message": error.message})
        out += self._event("response.failed", {"response": failed})
        return bytes(out)

    # --- the pieces ---------------------------------------------------------------------------

    def _response(self, *, status: str | None, error: dict[str, Any] | None = None) -> dict[str, Any]:
        return response_object(
            response_id=f"resp_{self._suffix}",
            created=self._created,
            model=self._model,
            echoed=self._echoed,
            output=[item.done() for item in self._items],
            usage=self._usage if status != "in_progress" else None,
            finish_reason=self._finish,
            status=status,
            error=error,
        )

    def _start(self, chunk: ChatChunk) -> bytes:
        self._started = True
        self._suffix = item_suffix(chunk.get("id"))
        self._created = chunk.get("created", 0)
        self._model = chunk.get("model") or ""
        begun = self._response(status="in_progress")
        return self._event("response.created", {"response": begun}) + self._event(
            "response.in_progress", {"response": begun}
        )

    def _text(self, text: str) -> bytes:
        out = bytearray()
        item = self._open
        if item is None or item.kind != "message":
            out += self._close_open()
            item = self._add(_Item(kind="message", index=len(self._items), item_id=f"msg_{self._suffix}"))
            added = {"type": "message", "id": item.id, "status": "in_progress", "role": "assistant", "content": []}
            out += self._event("response.output_item.added", {"output_index": item.index, "item": added})
            out += self._event(
                "response.content_part.added",
                {**self._where(item), "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}},
            )
        item.text.append(text)
        out += self._event("response.output_text.delta", {**self._where(item), "delta": text, "logprobs": []})
        return bytes(out)

    def _tool_call(self, call: dict[str, Any]) -> bytes:
        out = bytearray()
        position = call.get("index", 0)
        position = position if isinstance(position, int) and not isinstance(position, bool) else 0
        function = as_dict(call.get("function"))
        item = self._calls.get(position)
        if item is None:
            out += self._close_open()
            index = len(self._items)
            call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else ""
            name = function.get("name")
            name = name if isinstance(name, str) else ""
            item = self._add(
                _Item(
                    kind="function_call",
                    index=index,
                    item_id=f"fc_{self._suffix}_{position}",
                    call_id=call_id or f"call_{self._suffix}_{position}",  # some servers omit it
                    name=name,
                )
            )
            self._calls[position] = item
            added = {
                "type": "function_call",
                "id": item.id,
                "call_id": item.call_id,
                "name": item.name,
                "arguments": "",
                "status": "in_progress",
            }
            out += self._event("response.output_item.added", {"output_index": index, "item": added})
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item.arguments.append(arguments)
            delta = {"item_id": item.id, "output_index": item.index, "delta": arguments}
            out += self._event("response.function_call_arguments.delta", delta)
        return bytes(out)

    def _add(self, item: _Item) -> _Item:
        self._items.append(item)
        self._open = item
        return item

    def _close_open(self) -> bytes:
        item, self._open = self._open, None
        if item is None:
            return b""
        done = item.done()
        out = bytearray()
        if item.kind == "message":
            part = done["content"][0]
            out += self._event("response.output_text.done", {**self._where(item), "text": part["text"], "logprobs": []})
            out += self._event("response.content_part.done", {**self._where(item), "part": part})
        else:
            arguments = {"item_id": item.id, "output_index": item.index, "name": item.name}
            out += self._event("response.function_call_arguments.done", {**arguments, "arguments": done["arguments"]})
        out += self._event("response.output_item.done", {"output_index": item.index, "item": done})
        return bytes(out)

    @staticmethod
    def _where(item: _Item) -> dict[str, Any]:
        return {"item_id": item.id, "output_index": item.index, "content_index": 0}

    def _event(self, kind: str, data: dict[str, Any]) -> bytes:
        data = {"type": kind, "sequence_number": self._sequence, **data}
        self._sequence += 1
        return encode_event(orjson.dumps(data), event=kind)
