"""Answers to the app that the sidecar makes itself: JSON bodies, and errors in the shape of
the API the app called (`ErrorShape.error_body`)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from proxy.errors import ApiError
from proxy.frontends.base import ErrorShape


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers, content_type="application/json")


def error_response(frontend: ErrorShape, error: ApiError) -> web.Response:
    return json_response(frontend.error_body(error), status=error.status, headers=error.headers)
