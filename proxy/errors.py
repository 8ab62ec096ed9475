"""Errors the sidecar answers with; each inbound API renders them in its own shape.

Messages quote the app's input only through `echo`, cut to `ECHO_LIMIT` characters:
an error must not hand a 100 KB model name (or header) back, nor into logs and spans.
"""

from __future__ import annotations

from typing import Any

#: Longest piece of the app's input an error message quotes.
ECHO_LIMIT = 100
#: Backstop for messages built elsewhere (routing, policy, provider summaries).
MESSAGE_LIMIT = 4000
_ELLIPSIS = "…"


class ApiError(Exception):
    # A plain class, not a dataclass: a dataclass's generated methods are memory every pod pays.
    def __init__(
        self,
        status: int,
        message: str,
        # OpenAI-style `type` and `code`; the Anthropic front end maps status to its own types.
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if len(message) > MESSAGE_LIMIT:
            message = message[:MESSAGE_LIMIT] + _ELLIPSIS
        if param is not None and len(param) > ECHO_LIMIT:
            param = param[:ECHO_LIMIT] + _ELLIPSIS
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers: dict[str, str] = {} if headers is None else headers

    def __repr__(self) -> str:
        return (
            f"ApiError(status={self.status!r}, message={self.message!r}, type={self.type!r}, code={self.code!r}, "
            f"param={self.param!r}, headers={self.headers!r})"
        )

    def __str__(self) -> str:
        return f"{self.status} {self.message}"


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", code, param)


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + _ELLIPSIS


def echo(value: Any, limit: int = ECHO_LIMIT) -> str:
    """A value from the app as an error message quotes it: strings and scalars as their repr,
    containers by kind (their content is the app's, and may be large), all cut to `limit`."""
    if isinstance(value, str):
        return repr(clip(value, limit))
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return clip(repr(value), limit)
