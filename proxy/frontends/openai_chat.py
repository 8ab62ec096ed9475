"""Inbound OpenAI API: `/v1/chat/completions` and `/v1/embeddings`.

The internal form is this API's own shape, so parsing is validation, and
rendering is the identity, except for the usage chunk that the sidecar always
asks providers for and hides from clients that did not, and the internal count
of cache writes, which OpenAI's usage has no field for (`public_usage`).
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import orjson

from proxy.errors import ApiError, bad_request, clip, echo
from proxy.frontends.base import ParsedChat
from proxy.frontends.openai_checks import (
    check_embeddings,
    check_messages,
    check_response_format,
    check_scalars,
    check_stream,
    check_tools,
)
from proxy.providers.base import ChatChunk, ChatResponse, EmbeddingsResponse, public_usage

DONE = b"data: [DONE]\n\n"
#: How many served models the unknown-model 404 lists.
_LISTED_MODELS = 20


def _require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a non-empty string", param="model")
    return model


class OpenAIStreamEncoder:
    __slots__ = ("_include_usage",)

    def __init__(self, *, include_usage: bool) -> None:
        self._include_usage = include_usage

    def encode(self, chunk: ChatChunk) -> bytes:
        if not chunk.get("choices") and not self._include_usage:
            return b""
        raw: bytes | None = getattr(chunk, "raw", None)  # a RawChunk from an OpenAI-shaped provider: its own bytes
        if raw is not None:
            return b"data: " + raw + b"\n\n"
        return b"data: " + orjson.dumps(public_usage(chunk)) + b"\n\n"

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
        check_messages(body.get("messages"))
        check_tools(body)
        check_response_format(body)
        check_scalars(body)
        stream, include_usage = check_stream(body)
        return ParsedChat(model=model, stream=stream, request=body, include_usage=include_usage, original=body)

    def render_chat(self, response: ChatResponse) -> dict[str, Any]:
        return public_usage(response)

    def stream_encoder(self, *, include_usage: bool) -> OpenAIStreamEncoder:
        return OpenAIStreamEncoder(include_usage=include_usage)

    def error_body(self, error: ApiError) -> dict[str, Any]:
        return openai_error_body(error)

    # Embeddings have one inbound API only, so they live here.

    def parse_embeddings(self, body: Any) -> tuple[str, dict[str, Any]]:
        if not isinstance(body, dict):
            raise bad_request("request body must be a JSON object")
        model = _require_model(body)
        check_embeddings(body)
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
    listed = ", ".join(clip(m) for m in served[:_LISTED_MODELS]) or "(none)"
    if len(served) > _LISTED_MODELS:
        listed += f" and {len(served) - _LISTED_MODELS} more (GET /v1/models lists them)"
    return ApiError(
        404,
        f"The model {echo(model)} does not exist on this gateway; it serves: {listed}",
        "invalid_request_error",
        "model_not_found",
        "model",
    )
