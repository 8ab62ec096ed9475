"""Inbound OpenAI API: `/v1/chat/completions` and `/v1/embeddings`.

The internal form is this API's own shape, so parsing is validation, and
rendering is the identity, except for the usage chunk that the sidecar always
asks providers for and hides from clients that did not.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import orjson

from proxy.errors import ApiError, bad_request
from proxy.frontends.base import ParsedChat
from proxy.providers.base import ChatChunk, ChatResponse, EmbeddingsResponse

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_PART_TYPES = {"text", "image_url", "input_audio", "file", "refusal"}
_RESPONSE_FORMATS = {"text", "json_object", "json_schema"}

DONE = b"data: [DONE]\n\n"


def _require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a non-empty string", param="model")
    return model


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' is required and must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object", param=where)
        role = message.get("role")
        if role not in _ROLES:
            raise bad_request(f"{where}.role must be one of {sorted(_ROLES)}, got {role!r}", param=f"{where}.role")
        content = message.get("content")
        if content is None:
            if role == "assistant" and message.get("tool_calls"):
                continue
            if role == "assistant" and "content" in message:
                continue
            raise bad_request(f"{where}.content is required", param=f"{where}.content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") not in _PART_TYPES:
                    got = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise bad_request(
                        f"{where}.content[{j}].type must be one of {sorted(_PART_TYPES)}, got {got!r}",
                        param=f"{where}.content[{j}].type",
                    )
        elif not isinstance(content, str):
            raise bad_request(f"{where}.content must be a string or an array of parts", param=f"{where}.content")
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise bad_request(f"{where}.tool_call_id is required for role 'tool'", param=f"{where}.tool_call_id")


def _check_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise bad_request("'tools' must be an array", param="tools")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad_request(f"tools[{i}].function.name is required", param=f"tools[{i}].function.name")


def _check_response_format(body: dict[str, Any]) -> None:
    response_format = body.get("response_format")
    if response_format is None:
        return
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind not in _RESPONSE_FORMATS:
        raise bad_request(
            f"response_format.type must be one of {sorted(_RESPONSE_FORMATS)}, got {kind!r}",
            param="response_format.type",
        )
    if kind == "json_schema":
        schema = response_format.get("json_schema")
        if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
            raise bad_request("response_format.json_schema.name is required", param="response_format.json_schema")


class OpenAIStreamEncoder:
    __slots__ = ("_include_usage",)

    def __init__(self, *, include_usage: bool) -> None:
        self._include_usage = include_usage

    def encode(self, chunk: ChatChunk) -> bytes:
        if not chunk.get("choices") and not self._include_usage:
            return b""
        raw = getattr(chunk, "raw", None)  # straight from an OpenAI-shaped provider: its own bytes
        if raw is not None:
            return b"data: " + raw + b"\n\n"
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def finish(self) -> bytes:
        return DONE

    def error(self, error: ApiError) -> bytes:
        # The OpenAI SDKs raise an APIError when a stream event carries `error`.
        return b"data: " + json.dumps(openai_error_body(error)).encode() + b"\n\n"


def openai_error_body(error: ApiError) -> dict[str, Any]:
    return {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}


class OpenAIFrontend:
    api = "openai"

    def parse_chat(self, body: Any) -> ParsedChat:
        if not isinstance(body, dict):
            raise bad_request("request body must be a JSON object")
        model = _require_model(body)
        _check_messages(body.get("messages"))
        _check_tools(body)
        _check_response_format(body)
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise bad_request("'stream' must be a boolean", param="stream")
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise bad_request("'stream_options' must be an object", param="stream_options")
        include_usage = bool(stream and options and options.get("include_usage"))
        return ParsedChat(model=model, stream=stream, request=body, include_usage=include_usage)

    def render_chat(self, response: ChatResponse) -> dict[str, Any]:
        return response

    def stream_encoder(self, *, include_usage: bool) -> OpenAIStreamEncoder:
        return OpenAIStreamEncoder(include_usage=include_usage)

    def error_body(self, error: ApiError) -> dict[str, Any]:
        return openai_error_body(error)

    # Embeddings have one inbound API only, so they live here.

    def parse_embeddings(self, body: Any) -> tuple[str, dict[str, Any]]:
        if not isinstance(body, dict):
            raise bad_request("request body must be a JSON object")
        model = _require_model(body)
        inputs = body.get("input")
        valid = isinstance(inputs, str) or (
            isinstance(inputs, list) and inputs and all(isinstance(x, (str, int, list)) for x in inputs)
        )
        if not valid:
            raise bad_request("'input' is required: a string or a non-empty array of strings", param="input")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise bad_request(f"'encoding_format' must be 'float' or 'base64', got {encoding!r}", param="encoding_format")
        return model, body

    def render_embeddings(self, response: EmbeddingsResponse, *, encoding_format: str) -> EmbeddingsResponse:
        if encoding_format != "base64":
            return response
        for item in response.get("data", []):
            vector = item.get("embedding")
            if isinstance(vector, list):  # a provider that only speaks floats
                item["embedding"] = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        return response


def models_list(models: list[str]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 0, "owned_by": "modelway"} for m in models],
    }


def error_for_unknown_model(model: str, served: list[str]) -> ApiError:
    return ApiError(
        404,
        f"The model {model!r} does not exist on this gateway; it serves: {', '.join(served) or '(none)'}",
        "invalid_request_error",
        "model_not_found",
        "model",
    )

