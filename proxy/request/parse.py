"""Stage 1, parse: the app's HTTP request -> the internal form (`ParsedChat`), or a 4xx.

The body is read under the sidecar's size limit, must be JSON of bounded depth, and is then
checked and converted by the front end of the API the app called (`proxy.frontends`).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from proxy.errors import ApiError, bad_request, clip, echo
from proxy.frontends.base import Frontend, ParsedChat
from proxy.frontends.openai_chat import OpenAIFrontend
from proxy.json_limits import MAX_DEPTH, is_depth_error, too_deep


async def parse_chat(request: web.Request, frontend: Frontend, *, max_body_bytes: int) -> ParsedChat:
    return frontend.parse_chat(await read_json(request, max_body_bytes=max_body_bytes))


async def parse_embeddings(
    request: web.Request, frontend: OpenAIFrontend, *, max_body_bytes: int
) -> tuple[str, dict[str, Any]]:
    """(the model asked for, the checked body)."""
    return frontend.parse_embeddings(await read_json(request, max_body_bytes=max_body_bytes))


async def read_json(request: web.Request, *, max_body_bytes: int) -> Any:
    content_type = request.content_type
    if content_type != "application/json":
        raise ApiError(
            415,
            f"Content-Type must be application/json, got {echo(content_type) if content_type else '(none)'}",
            "invalid_request_error",
            "unsupported_media_type",
        )
    if request.content_length is not None and request.content_length > max_body_bytes:
        raise _too_large(max_body_bytes)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(max_body_bytes) from None
    except web.RequestPayloadError as exc:  # e.g. Content-Encoding: gzip on a body that is not gzip
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = clip(lines[-1]) if lines else "malformed"
        raise bad_request(f"request body could not be read: {reason}", code="bad_body_encoding") from None
    try:
        body = orjson.loads(raw)  # ~3x faster than json.loads on every request
    except ValueError as exc:
        if is_depth_error(exc):
            raise _too_deep() from None
        raise bad_request(f"request body is not valid JSON: {clip(str(exc))}") from None
    if too_deep(raw, body):
        raise _too_deep()
    return body


def _too_deep() -> ApiError:
    return bad_request(f"request body nests JSON more than {MAX_DEPTH} levels deep", code="json_too_deep")


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"request body is larger than the sidecar's limit of {limit} bytes",
        "invalid_request_error",
        "request_too_large",
    )
