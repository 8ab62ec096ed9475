"""The Anthropic Messages API's error shape, apart from its front end.

The sidecar answers errors on `/v1/messages` paths (an unknown path, a request aiohttp cannot
parse, a front end that could not be loaded) in this shape without loading the front end itself
(`proxy.frontends.anthropic_messages`, imported by the first Messages request: `proxy.server`).
"""

from __future__ import annotations

from typing import Any

from proxy.errors import ApiError

#: HTTP status -> Anthropic error `type` (https://docs.anthropic.com/en/api/errors).
ERROR_TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int, code: str | None = None) -> str:
    if code == "overloaded":  # the sidecar's own backpressure: Anthropic's word for it, whatever the status
        return "overloaded_error"
    if status in ERROR_TYPE_BY_STATUS:
        return ERROR_TYPE_BY_STATUS[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def anthropic_error_body(error: ApiError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(error.status, error.code), "message": error.message}}


class AnthropicErrors:
    """The Messages API's `ErrorShape` (`proxy.frontends.base`)."""

    __slots__ = ()
    api = "anthropic"

    def error_body(self, error: ApiError) -> dict[str, Any]:
        return anthropic_error_body(error)
