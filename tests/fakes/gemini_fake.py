"""Fake Google Gemini speaking the Generative Language API (v1beta) wire format.

POST /v1beta/models/{model}:generateContent
POST /v1beta/models/{model}:streamGenerateContent?alt=sse   (without alt=sse: one JSON array)
POST /v1beta/models/{model}:embedContent | :batchEmbedContents | :countTokens
Auth: ``x-goog-api-key`` header or ``key`` query parameter.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from .answers import Conversation, Reply, ToolMode, embedding, random_token, reply_to, word_pieces
from .behaviour import (
    STATE,
    Behaviour,
    ErrorFn,
    FakeState,
    add_control_routes,
    before_reply,
    record,
    send_json,
    sse,
    stream_events,
)

FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "stop_sequence": "STOP"}
STATUSES = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


def _both_spellings(*names: str) -> frozenset[str]:
    """Proto JSON accepts lowerCamelCase and the original snake_case field names."""
    snake = ("".join("_" + c.lower() if c.isupper() else c for c in n) for n in names)
    return frozenset((*names, *snake))


REQUEST_FIELDS = _both_spellings(
    "model",
    "contents",
    "tools",
    "toolConfig",
    "safetySettings",
    "systemInstruction",
    "generationConfig",
    "cachedContent",
)
GENERATION_FIELDS = _both_spellings(
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "enableEnhancedCivicAnswers",
    "speechConfig",
    "thinkingConfig",
    "imageConfig",
    "mediaResolution",
) | {"_responseJsonSchema"}
PART_DATA = _both_spellings(
    "text", "inlineData", "functionCall", "functionResponse", "fileData", "executableCode", "codeExecutionResult"
)


class ApiError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


def create_app(api_key: str) -> web.Application:
    app = web.Application()
    app[STATE] = FakeState(api_key=api_key)
    add_control_routes(app)
    for version in ("v1beta", "v1"):
        app.router.add_post(f"/{version}/models/{{target}}", _dispatch)
    return app


def gemini_error(status: int, message: str | None, details: list[dict[str, Any]] | None = None) -> web.Response:
    name, default = STATUSES.get(status, ("UNKNOWN", "Unknown error."))
    error: dict[str, Any] = {"code": status, "message": message or default, "status": name}
    if details:
        error["details"] = details
    return web.json_response({"error": error}, status=status)


def _scripted_error(behaviour: Behaviour) -> ErrorFn:
    """Scripted errors; a 429 with retry_after also tells the wait in the body
    (google.rpc.RetryInfo), as Google does."""

    def error(status: int, message: str | None) -> web.Response:
        retry = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{behaviour.retry_after}s"}]
        return gemini_error(status, message, retry if status == 429 and behaviour.retry_after else None)

    return error


async def _dispatch(request: web.Request) -> web.StreamResponse:
    body = await record(request)
    model, _, method = request.match_info["target"].partition(":")
    behaviour = request.app[STATE].next_behaviour()
    stream = method == "streamGenerateContent"
    if (early := await before_reply(behaviour, _scripted_error(behaviour), stream=stream)) is not None:
        return early
    key = request.headers.get("x-goog-api-key") or request.query.get("key")
    if not key:
        return gemini_error(
            403,
            "Method doesn't allow unregistered callers (callers without established "
            "identity). Please use API key or other form of API consumer identity to call this API.",
        )
    if key != request.app[STATE].api_key:
        info = {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        }
        return gemini_error(400, "API key not valid. Please pass a valid API key.", [info])
    return await answer(request, body, model=model, method=method, behaviour=behaviour)


async def answer(
    request: web.Request, body: Any, *, model: str, method: str, behaviour: Behaviour
) -> web.StreamResponse:
    """An authenticated call's answer (also served by the fake Vertex AI for publisher google)."""
    stream = method == "streamGenerateContent"
    if not isinstance(body, dict):
        return gemini_error(400, "Invalid JSON payload received. Unexpected token.")
    try:
        if method in ("generateContent", "streamGenerateContent"):
            reply = reply_to(conversation(body))
            responses = list(generate_responses(model, reply, stream=stream))
            if not stream:
                return await send_json(request, responses[0], behaviour)
            if request.query.get("alt") != "sse":
                return await send_json(request, responses, behaviour)  # the JSON-array stream
            error = sse({"error": {"code": 503, "message": STATUSES[503][1], "status": "UNAVAILABLE"}}, sep="\r\n\r\n")
            # Google separates events with CRLF CRLF; any SSE parser must cope.
            events = [sse(r, sep="\r\n\r\n") for r in responses]
            return await stream_events(request, events, behaviour, error_event=error)
        if method == "embedContent":
            return await send_json(request, {"embedding": _embed(body)}, behaviour)
        if method == "batchEmbedContents":
            return await send_json(request, {"embeddings": _batch_embed(model, body)}, behaviour)
        if method == "countTokens":
            # Either `contents` alone or a whole `generateContentRequest` (with its own model).
            counted = body.get("generateContentRequest") if "generateContentRequest" in body else body
            if not isinstance(counted, dict) or ("generateContentRequest" in body and len(body) > 1):
                raise ApiError('Invalid JSON payload received. Unknown name at "generateContentRequest".')
            return web.json_response({"totalTokens": reply_to(conversation(counted)).input_tokens})
    except ApiError as exc:
        return gemini_error(exc.status, exc.message)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        # A malformed request must be a 400, never a 500 the caller would retry.
        return gemini_error(400, f"Invalid JSON payload received (fake could not read it: {exc!r}).")
    return gemini_error(404, f"Method not found: {method}")


def _get(obj: dict[str, Any], camel: str, default: Any = None) -> Any:
    """Read a field given in either spelling."""
    snake = "".join("_" + c.lower() if c.isupper() else c for c in camel)
    return obj.get(camel, obj.get(snake, default))


def _unknown(obj: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    for name in obj:
        if name not in allowed:
            at = f" at '{where}'" if where else ""
            raise ApiError(f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.')


def conversation(body: dict[str, Any]) -> Conversation:
    _unknown(body, REQUEST_FIELDS, "")
    contents = body.get("contents")
    if not contents:
        raise ApiError("* GenerateContentRequest.contents: contents is not specified\n")
    for i, content in enumerate(contents):
        if content.get("role", "user") not in ("user", "model", "function"):
            raise ApiError("Please use a valid role: user, model.")
        _check_parts(f"contents[{i}]", content.get("parts") or [])
    system = _get(body, "systemInstruction") or {}
    texts = [p["text"] for p in system.get("parts", []) if "text" in p]
    for content in contents:
        texts += [p["text"] for p in content["parts"] if "text" in p]
        texts += [_response_text(r) for p in content["parts"] if (r := _get(p, "functionResponse")) is not None]
    user_turns = [c for c in contents if c.get("role", "user") in ("user", "function")]
    last = user_turns[-1]["parts"] if user_turns else []
    results = [_response_text(r) for p in last if (r := _get(p, "functionResponse")) is not None]
    tools = [d["name"] for t in body.get("tools") or [] for d in _get(t, "functionDeclarations") or []]
    mode, forced = _tool_config(_get(body, "toolConfig") or {})
    config = _get(body, "generationConfig") or {}
    _unknown(config, GENERATION_FIELDS, "generation_config")
    schema = _get(config, "responseSchema") or _get(config, "responseJsonSchema")
    return Conversation(
        texts=texts,
        last_user_text="".join(p["text"] for p in last if "text" in p),
        tool_results=results or None,
        tools=tools,
        tool_mode=mode,
        forced_tool=forced,
        json_mode=_get(config, "responseMimeType") == "application/json",
        json_schema=schema,
        max_tokens=_get(config, "maxOutputTokens"),
        stop=list(_get(config, "stopSequences") or []),
    )


def _check_parts(where: str, parts: list[Any]) -> None:
    if not parts:
        raise ApiError(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.\n")
    for j, part in enumerate(parts):
        if not any(k in PART_DATA for k in part):
            raise ApiError(
                f"* GenerateContentRequest.{where}.parts[{j}].data: required oneof field 'data' must "
                "have one initialized field\n"
            )
        inline = _get(part, "inlineData")
        if inline is not None:
            try:
                base64.b64decode(inline.get("data", ""), validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(
                    f"Invalid value at '{where}.parts[{j}].inline_data.data' (TYPE_BYTES), Base64 decoding failed"
                ) from None
            if not _get(inline, "mimeType"):
                raise ApiError(
                    f"* GenerateContentRequest.{where}.parts[{j}].inline_data.mime_type: mime_type is not specified\n"
                )


def _response_text(response: dict[str, Any]) -> str:
    """A functionResponse back to text: a lone string result, else its JSON."""
    payload = response.get("response")
    if isinstance(payload, dict):
        for key in ("content", "result", "output", "text"):
            if isinstance(payload.get(key), str) and len(payload) == 1:
                return str(payload[key])
    return payload if isinstance(payload, str) else json.dumps(payload)


def _tool_config(config: dict[str, Any]) -> tuple[ToolMode, str | None]:
    calling = _get(config, "functionCallingConfig") or {}
    mode = calling.get("mode", "AUTO")
    allowed = _get(calling, "allowedFunctionNames") or []
    if mode == "ANY":
        return "required", allowed[0] if allowed else None
    return ("none", None) if mode == "NONE" else ("auto", None)  # AUTO, VALIDATED


def generate_responses(model: str, reply: Reply, *, stream: bool) -> Iterator[dict[str, Any]]:
    """GenerateContentResponse objects: one, or one per word when streaming.

    Function calls come whole in one part, as Gemini sends them.
    """
    if reply.tool_call is not None:
        pieces: list[dict[str, Any]] = [
            {"functionCall": {"name": reply.tool_call.name, "args": reply.tool_call.arguments}}
        ]
    elif stream:
        pieces = [{"text": w} for w in word_pieces(reply.text or "")]
    else:
        pieces = [{"text": reply.text or ""}]
    response_id = random_token(22)
    so_far = 0
    for n, part in enumerate(pieces, start=1):
        last = n == len(pieces)
        so_far = reply.output_tokens if last else min(reply.output_tokens, so_far + 1)
        candidate: dict[str, Any] = {"content": {"parts": [part], "role": "model"}, "index": 0}
        if last:
            candidate["finishReason"] = FINISH[reply.finish]
        usage = {
            "promptTokenCount": reply.input_tokens,
            "candidatesTokenCount": so_far,
            "totalTokenCount": reply.input_tokens + so_far,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": reply.input_tokens}],
        }
        # Like the real API: usage on every chunk, cumulative; the last one is final.
        yield {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": response_id}


def _embed(request: dict[str, Any]) -> dict[str, list[float]]:
    content = request.get("content")
    if not isinstance(content, dict) or not content.get("parts"):
        raise ApiError("* EmbedContentRequest.content: content is not specified\n")
    text = "".join(p.get("text", "") for p in content["parts"])
    return {"values": embedding(text, int(_get(request, "outputDimensionality") or 8))}


def _batch_embed(model: str, body: dict[str, Any]) -> list[dict[str, list[float]]]:
    requests = body.get("requests")
    if not requests:
        raise ApiError("* BatchEmbedContentsRequest.requests: requests is not specified\n")
    for i, req in enumerate(requests):
        if req.get("model") != f"models/{model}":
            raise ApiError(
                f"* BatchEmbedContentsRequest.requests[{i}].model: the model of each request must "
                f"match the batch model models/{model}\n"
            )
    return [_embed(req) for req in requests]
