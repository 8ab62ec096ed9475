"""The fake OpenAI's Responses API, in OpenAI's documented wire format.

POST /v1/responses                (OpenAI: `Authorization: Bearer <key>`)
POST /openai/v1/responses         (Azure OpenAI's v1 API: `api-key`, or an Entra ID bearer token; the
                                   deployment in `model`)

A request: `model`, `input` (a string, or items: messages with `input_text` / `output_text` parts,
`function_call`, `function_call_output`, `reasoning`), `instructions`, `tools` (functions, and
built-in tools such as `web_search` or `file_search`, accepted and echoed), `tool_choice`,
`max_output_tokens`, `previous_response_id` (a response this fake stored: its input and output
continue the conversation, and its input tokens come back as `input_tokens_details.cached_tokens`,
the prompt-cache hit OpenAI reports; an unknown id is OpenAI's 400), `store` (default true: kept for
`previous_response_id`), `stream`.

The answer is a `response` object; a stream is `event: <type>` / `data: <json with type and
sequence_number>` events: response.created, response.in_progress, per output item
response.output_item.added, (text) response.content_part.added, response.output_text.delta...,
response.output_text.done, response.content_part.done, (function call)
response.function_call_arguments.delta..., response.function_call_arguments.done, then
response.output_item.done; last response.completed (or response.incomplete) with the whole
response. No `[DONE]`. A failure mid-stream is an `error` event.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from .answers import Conversation, Reply, ToolMode, json_pieces, random_token, reply_to, word_pieces
from .behaviour import send_json, sse, stream_events

# The responses each fake app stored (store: true), by id: (the conversation's texts, the response).
STORED = web.AppKey("fake_stored_responses", dict[str, tuple[list[str], dict[str, Any]]])

_ECHOED = ("instructions", "max_output_tokens", "metadata", "parallel_tool_calls", "temperature", "top_p", "user")


class ResponsesError(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def _parts_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ResponsesError(f"Invalid type for '{where}': expected a string or an array.", where)
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            texts.append(str(part.get("text", "")))
        elif kind not in ("input_image", "input_file", "refusal"):
            raise ResponsesError(f"Invalid value: '{kind}'. Supported values are: 'input_text', ...", f"{where}[{j}]")
    return "".join(texts)


def conversation(body: dict[str, Any], history: list[str]) -> tuple[Conversation, list[str]]:
    """The request's conversation (after `history`, a stored response's texts) and all its texts."""
    given = body.get("input")
    if given is None:
        raise ResponsesError("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    items = [{"type": "message", "role": "user", "content": given}] if isinstance(given, str) else given
    if not isinstance(items, list):
        raise ResponsesError("Invalid type for 'input': expected a string or an array.", "input")
    texts = [*history]
    if isinstance(body.get("instructions"), str):
        texts.append(body["instructions"])
    last_user, results = "", []
    for i, item in enumerate(items):
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind == "message":
            text = _parts_text(item.get("content"), f"input[{i}].content")
            texts.append(text)
            results = []
            if item.get("role") == "user":
                last_user = text
        elif kind == "function_call_output":
            output = item.get("output")
            results.append(output if isinstance(output, str) else _parts_text(output, f"input[{i}].output"))
            texts.append(results[-1])
        elif kind not in ("function_call", "reasoning", "item_reference", "web_search_call"):
            raise ResponsesError(f"Invalid value: '{kind}'.", f"input[{i}].type", "invalid_value")
    tools: list[str] = []
    for i, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise ResponsesError("Missing required parameter: 'tools[0].type'.", f"tools[{i}].type")
        if tool["type"] == "function":
            if not tool.get("name"):
                raise ResponsesError(f"Missing required parameter: 'tools[{i}].name'.", f"tools[{i}].name")
            tools.append(tool["name"])
    choice = body.get("tool_choice")
    mode: ToolMode = choice if choice in ("none", "required") else "auto"
    forced = choice.get("name") if isinstance(choice, dict) and choice.get("type") == "function" else None
    conv = Conversation(
        texts=texts,
        last_user_text=last_user,
        tool_results=results or None,
        tools=tools,
        tool_mode="required" if forced else mode,
        forced_tool=forced,
        max_tokens=body.get("max_output_tokens"),
    )
    return conv, texts


def _output(reply: Reply) -> list[dict[str, Any]]:
    if reply.tool_call is not None:
        return [
            {
                "type": "function_call",
                "id": "fc_" + random_token(24),
                "call_id": "call_" + random_token(24),
                "name": reply.tool_call.name,
                "arguments": reply.tool_call.arguments_json,
                "status": "completed",
            }
        ]
    text = {"type": "output_text", "text": reply.text or "", "annotations": [], "logprobs": []}
    return [
        {
            "type": "message",
            "id": "msg_" + random_token(24),
            "status": "completed",
            "role": "assistant",
            "content": [text],
        }
    ]


def response_object(
    ident: str, body: dict[str, Any], model: str, *, status: str, output: list[dict[str, Any]], usage: Any
) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "model": model,
        "output": output,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "truncation": "disabled",
        "usage": usage,
        **{field: body.get(field) for field in _ECHOED},
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
    }


def _usage(reply: Reply, cached: int) -> dict[str, Any]:
    return {
        "input_tokens": reply.input_tokens,
        "input_tokens_details": {"cached_tokens": min(cached, reply.input_tokens)},
        "output_tokens": reply.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": reply.input_tokens + reply.output_tokens,
    }


async def answer(request: web.Request, body: dict[str, Any], model: str, behaviour: Any) -> web.StreamResponse:
    """One authenticated call's answer (`openai_fake` checked the key and applied the script)."""
    stored = request.app[STORED]
    previous = body.get("previous_response_id")
    history: list[str] = []
    cached = 0
    if previous is not None:
        if previous not in stored:
            raise ResponsesError(
                f"Previous response with id '{previous}' not found.",
                "previous_response_id",
                "previous_response_not_found",
            )
        history, before = stored[previous]
        cached = before["usage"]["input_tokens"]
        history = [*history, *(str(o.get("text", "")) for item in before["output"] for o in item.get("content", []))]
    conv, texts = conversation(body, history)
    reply = reply_to(conv)
    ident = "resp_" + random_token(40)
    status = "incomplete" if reply.finish == "length" else "completed"
    done = response_object(ident, body, model, status=status, output=_output(reply), usage=_usage(reply, cached))
    if body.get("store", True):
        stored[ident] = (texts, done)
    headers = {"x-request-id": "req_" + random_token(24)}
    if body.get("stream") is not True:
        return await send_json(request, done, behaviour, headers=headers)
    events = [sse(data, data["type"]) for data in stream_data(done, body, reply)]
    error = sse(
        {"type": "error", "code": "server_error", "message": "The server had an error.", "param": None}, "error"
    )
    return await stream_events(request, events, behaviour, error_event=error, headers=headers)


def stream_data(done: dict[str, Any], body: dict[str, Any], reply: Reply) -> Iterator[dict[str, Any]]:
    """The documented events of one streamed response, numbered."""
    started = {**done, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
    ]
    for index, item in enumerate(done["output"]):
        at = {"output_index": index, "item_id": item["id"]}
        if item["type"] == "function_call":
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**item, "arguments": "", "status": "in_progress"},
                }
            )
            for piece in json_pieces(item["arguments"]):
                events.append({"type": "response.function_call_arguments.delta", **at, "delta": piece})
            events.append({"type": "response.function_call_arguments.done", **at, "arguments": item["arguments"]})
        else:
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**item, "content": [], "status": "in_progress"},
                }
            )
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            events.append({"type": "response.content_part.added", **at, "content_index": 0, "part": part})
            text = item["content"][0]["text"]
            for piece in word_pieces(text):
                events.append(
                    {"type": "response.output_text.delta", **at, "content_index": 0, "delta": piece, "logprobs": []}
                )
            events.append({"type": "response.output_text.done", **at, "content_index": 0, "text": text, "logprobs": []})
            events.append({"type": "response.content_part.done", **at, "content_index": 0, "part": item["content"][0]})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    events.append({"type": f"response.{done['status']}", "response": done})
    for number, event in enumerate(events):
        yield {**event, "sequence_number": number}
