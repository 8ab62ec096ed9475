"""Fake OpenAI (and Azure OpenAI) speaking the Chat Completions / Embeddings wire format.

OpenAI:  POST /v1/chat/completions, POST /v1/embeddings, GET /v1/models
         POST /v1/responses (the Responses API: `openai_responses_fake`)
         (``Authorization: Bearer <key>``)
Azure:   POST /openai/deployments/{deployment}/chat/completions?api-version=...
         POST /openai/deployments/{deployment}/embeddings?api-version=...
         POST /openai/v1/responses (the v1 API: no api-version, the deployment in `model`)
         (``api-key: <key>``, or ``Authorization: Bearer <token>`` with a Microsoft Entra ID
         access token the fake Entra ID issued, refused once expired; the deployment is the model)
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import openai_responses_fake
from .answers import Conversation, Reply, ToolMode, embedding, json_pieces, random_token, reply_to, word_pieces, words
from .behaviour import (
    STATE,
    Behaviour,
    FakeState,
    add_control_routes,
    before_reply,
    record,
    send_json,
    sse,
    stream_events,
)
from .entra_fake import check_access_token

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


ROLES = ("system", "developer", "user", "assistant", "tool", "function")
FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "stop_sequence": "stop"}
# OpenAI's error "type"/"code" per status, as the API sends them.
ERROR_KINDS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}
_NO_FILTER = {"filtered": False, "severity": "safe"}
CONTENT_FILTER = {k: _NO_FILTER for k in ("hate", "self_harm", "sexual", "violence")}
DEFAULT_MODELS = ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small")


@dataclass(frozen=True)
class Call:
    """One authenticated, well-formed API call, ready for an endpoint handler."""

    request: web.Request
    body: dict[str, Any]
    model: str  # for Azure, the deployment
    azure: bool
    behaviour: Behaviour


def create_app(api_key: str) -> web.Application:
    app = web.Application()
    app[STATE] = FakeState(api_key=api_key)
    add_control_routes(app)
    app.router.add_post("/v1/chat/completions", _guarded(_chat, azure=False))
    app.router.add_post("/v1/embeddings", _guarded(_embeddings, azure=False))
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", _guarded(_chat, azure=True))
    app.router.add_post("/openai/deployments/{deployment}/embeddings", _guarded(_embeddings, azure=True))
    app[openai_responses_fake.STORED] = {}
    app.router.add_post("/v1/responses", _guarded(_responses, azure=False))
    app.router.add_post("/openai/v1/responses", _guarded(_responses, azure=True, v1=True))
    return app


class ApiError(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


def openai_error(
    status: int, message: str | None, *, param: str | None = None, code: str | None = None
) -> web.Response:
    kind, default_code, default_message = ERROR_KINDS.get(status, ("server_error", None, "Error."))
    error = {"message": message or default_message, "type": kind, "param": param, "code": code or default_code}
    return web.json_response({"error": error}, status=status)


def azure_error(status: int, message: str | None) -> web.Response:
    # Azure's gateway answers auth, routing and throttling itself, in its own shape;
    # everything else passes through in OpenAI's shape.
    if status in (401, 404, 429):
        default = {
            401: "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
            "to provide a valid key for an active subscription and use a correct regional API "
            "endpoint for your resource.",
            404: "Resource not found",
            429: "Requests to the ChatCompletions_Create Operation have exceeded call rate limit of "
            "your current pricing tier. Please retry after 1 second.",
        }[status]
        return web.json_response({"error": {"code": str(status), "message": message or default}}, status=status)
    return openai_error(status, message)


def _guarded(handler: Callable[[Call], Awaitable[web.StreamResponse]], *, azure: bool, v1: bool = False) -> Handler:
    """Record, apply the script, check credentials and errors, then call ``handler``. `v1`: Azure's
    v1 API (no api-version; the deployment in the body's `model`)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        body = await record(request)
        behaviour = request.app[STATE].next_behaviour()
        error = azure_error if azure else openai_error
        stream = isinstance(body, dict) and body.get("stream") is True
        if (early := await before_reply(behaviour, error, stream=stream)) is not None:
            return early
        key = request.app[STATE].api_key
        if azure:
            if "api-version" not in request.query and not v1:
                return azure_error(404, None)  # what Azure really answers, not a 400
            bearer = request.headers.get("authorization", "")
            if bearer.startswith("Bearer ") and "api-key" not in request.headers:
                if check_access_token(bearer.removeprefix("Bearer ")) is not None:
                    return azure_error(
                        401,
                        "Unauthorized. Access token is missing, invalid, audience is incorrect "
                        "(https://cognitiveservices.azure.com), or have expired.",
                    )
            elif request.headers.get("api-key") != key:
                return azure_error(401, None)
            model = body.get("model") if v1 and isinstance(body, dict) else request.match_info.get("deployment")
        else:
            auth = request.headers.get("Authorization", "")
            if not auth:
                return openai_error(
                    401,
                    "You didn't provide an API key. You need to provide your API key in "
                    "an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                )
            if auth != f"Bearer {key}":
                return openai_error(
                    401,
                    f"Incorrect API key provided: {auth.removeprefix('Bearer ')[:8]}****. "
                    "You can find your API key at https://platform.openai.com/account/api-keys.",
                )
            model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(body, dict):
            return openai_error(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly.)",
            )
        if not model:
            return openai_error(400, "you must provide a model parameter")
        try:
            return await handler(Call(request, body, str(model), azure, behaviour))
        except ApiError as exc:
            return openai_error(exc.status, exc.message, param=exc.param, code=exc.code)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            # A malformed request must be a 400, never a 500 the caller would retry.
            return openai_error(400, f"Invalid request (fake could not read it: {exc!r}).")

    return wrapped


async def _chat(call: Call) -> web.StreamResponse:
    body, model, azure = call.body, call.model, call.azure
    reply = reply_to(conversation(body))
    stream = body.get("stream") is True
    if body.get("stream_options") is not None and not stream:
        raise ApiError("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")
    ident = "chatcmpl-" + random_token(29)
    headers = {"x-request-id": "req_" + random_token(24)}
    if not stream:
        return await send_json(call.request, completion(ident, model, reply, azure), call.behaviour, headers=headers)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    events = (sse(c) for c in chunks(ident, model, reply, azure=azure, include_usage=include_usage))
    done = (sse("[DONE]"),)
    error = sse(
        {
            "error": {
                "message": "The server had an error while processing your request.",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
    )
    return await stream_events(call.request, [*events, *done], call.behaviour, error_event=error, headers=headers)


async def _responses(call: Call) -> web.StreamResponse:
    try:
        return await openai_responses_fake.answer(call.request, call.body, call.model, call.behaviour)
    except openai_responses_fake.ResponsesError as exc:
        raise ApiError(exc.message, exc.param, exc.code) from None


def conversation(body: dict[str, Any]) -> Conversation:
    messages = body.get("messages")
    if messages is None:
        raise ApiError("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise ApiError(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "messages",
            "empty_array",
        )
    _check_tool_turns(messages)
    texts = [t for m in messages for t in _texts(m.get("content"))]
    trailing_tools: list[str] = []
    for m in reversed(messages):
        if m.get("role") != "tool":
            break
        trailing_tools.insert(0, "".join(_texts(m.get("content"))))
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    tools = [_tool_name(i, t) for i, t in enumerate(body.get("tools") or [])]
    mode, forced = _tool_choice(body.get("tool_choice"), bool(tools))
    fmt = body.get("response_format") or {}
    stop = body.get("stop")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    return Conversation(
        texts=texts,
        last_user_text="".join(_texts(last_user.get("content"))),
        tool_results=trailing_tools or None,
        tools=tools,
        tool_mode=mode,
        forced_tool=forced,
        json_mode=fmt.get("type") == "json_object",
        json_schema=(fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None,
        max_tokens=max_tokens,
        stop=[stop] if isinstance(stop, str) else list(stop or []),
    )


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
    return []


def _check_tool_turns(messages: list[Any]) -> None:
    """OpenAI's own ordering rules for tool calls and tool messages."""
    pending: dict[str, int] = {}  # tool_call_id -> index of the assistant message
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ROLES:
            raise ApiError(
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                "'function', 'tool', and 'developer'.",
                f"messages[{i}].role",
                "invalid_value",
            )
        if role == "tool":
            if m.get("tool_call_id") not in pending:
                raise ApiError(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                    "message with 'tool_calls'.",
                    f"messages.[{i}].role",
                )
            del pending[m["tool_call_id"]]
            continue
        if pending:
            break
        if role == "assistant" and m.get("tool_calls"):
            pending = {c["id"]: i for c in m["tool_calls"]}
    if pending:
        at = next(iter(pending.values()))
        raise ApiError(
            "An assistant message with 'tool_calls' must be followed by tool messages responding to "
            "each 'tool_call_id'. The following tool_call_ids did not have response messages: " + ", ".join(pending),
            f"messages.[{at}].role",
        )


def _tool_name(i: int, tool: Any) -> str:
    kind = tool.get("type") if isinstance(tool, dict) else tool
    if kind not in ("function", "custom"):
        raise ApiError(
            f"Invalid value: '{kind}'. Supported values are: 'function' and 'custom'.",
            f"tools[{i}].type",
            "invalid_value",
        )
    spec = tool.get(kind) or {}
    if not spec.get("name"):
        raise ApiError(
            f"Missing required parameter: 'tools[{i}].{kind}.name'.",
            f"tools[{i}].{kind}.name",
            "missing_required_parameter",
        )
    return str(spec["name"])


def _tool_choice(choice: Any, has_tools: bool) -> tuple[ToolMode, str | None]:
    if choice is None or choice == "auto":
        return "auto", None
    if not has_tools:
        raise ApiError(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.", "tool_choice"
        )
    if choice in ("none", "required"):
        return choice, None
    if isinstance(choice, dict) and choice.get("type") == "function":
        return "required", (choice.get("function") or {}).get("name")
    raise ApiError(f"Invalid value for 'tool_choice': {choice!r}.", "tool_choice", "invalid_value")


def _usage(reply: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _tool_calls(reply: Reply, call_id: str) -> list[dict[str, Any]]:
    assert reply.tool_call is not None
    return [
        {
            "id": call_id,
            "type": "function",
            "function": {"name": reply.tool_call.name, "arguments": reply.tool_call.arguments_json},
        }
    ]


def completion(ident: str, model: str, reply: Reply, azure: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None, "annotations": []}
    if reply.tool_call is not None:
        message["tool_calls"] = _tool_calls(reply, "call_" + random_token(24))
    choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None, "finish_reason": FINISH[reply.finish]}
    body: dict[str, Any] = {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": _usage(reply),
        "system_fingerprint": "fp_fake",
    }
    if azure:
        choice["content_filter_results"] = CONTENT_FILTER
        body["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": CONTENT_FILTER}]
    else:
        body["service_tier"] = "default"
    return body


def chunks(ident: str, model: str, reply: Reply, *, azure: bool, include_usage: bool) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of one streamed answer, in order."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        out: dict[str, Any] = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [choice],
        }
        if azure:
            choice["content_filter_results"] = CONTENT_FILTER if delta.get("content") else {}
        else:
            out["service_tier"] = "default"
        if include_usage:
            out["usage"] = None  # documented: null on every chunk but the last
        return out

    if azure:
        # Azure opens with a choice-less chunk carrying only the prompt filter results.
        yield {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": CONTENT_FILTER}],
        }
    if reply.tool_call is not None:
        first = _tool_calls(reply, "call_" + random_token(24))[0]
        first = {"index": 0, **first, "function": {"name": reply.tool_call.name, "arguments": ""}}
        yield chunk({"role": "assistant", "content": None, "tool_calls": [first], "refusal": None})
        for piece in json_pieces(reply.tool_call.arguments_json):
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    else:
        yield chunk({"role": "assistant", "content": "", "refusal": None})
        for piece in word_pieces(reply.text or ""):
            yield chunk({"content": piece})
    yield chunk({}, FINISH[reply.finish])
    if include_usage:
        last = chunk({})
        last["choices"], last["usage"] = [], _usage(reply)
        yield last


async def _embeddings(call: Call) -> web.StreamResponse:
    body = call.body
    inputs = body.get("input")
    if inputs is None:
        raise ApiError("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    # One string, a list of strings, one token array, or a list of token arrays.
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or any(i in ("", []) for i in inputs):
        raise ApiError(
            "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
            "input",
        )
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise ApiError(
            f"Invalid value: '{fmt}'. Supported values are: 'float' and 'base64'.", "encoding_format", "invalid_value"
        )
    dims = int(body.get("dimensions") or 8)
    data = []
    for index, item in enumerate(inputs):
        vector = embedding(item if isinstance(item, str) else str(item), dims)
        # base64 is the little-endian float32 bytes, as the SDK decodes them.
        value: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if fmt == "base64" else vector
        data.append({"object": "embedding", "index": index, "embedding": value})
    tokens = sum(words(i) if isinstance(i, str) else len(i) for i in inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    out = {"object": "list", "data": data, "model": call.model, "usage": usage}
    return await send_json(call.request, out, call.behaviour)


async def _models(request: web.Request) -> web.Response:
    await record(request)
    key = request.app[STATE].api_key
    if request.headers.get("Authorization") != f"Bearer {key}":
        return openai_error(401, None)
    data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "system"} for m in DEFAULT_MODELS]
    return web.json_response({"object": "list", "data": data})
