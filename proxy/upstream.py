"""Classifying provider failures and pacing retries (pure, no I/O)."""

from __future__ import annotations

import email.utils
import random
import time

import msgspec

from proxy.snapshot import Retry

# Outcome kinds, also the `error.type` on spans.
CONNECT_ERROR = "connect_error"
TIMEOUT = "timeout"
RATE_LIMITED = "429"
SERVER_ERROR = "5xx"
BAD_RESPONSE = "bad_response"  # the provider answered something its format forbids
BACKEND_REJECTED = "backend_rejected"  # 401/403/404: this backend's config is wrong, try another
CLIENT_ERROR = "client_error"  # 400/413/422...: the request itself is wrong, no use trying others
UNSUPPORTED = "unsupported"  # the provider type cannot serve the operation
STREAM_CUT = "stream_cut"  # failed after the first byte reached the client
CREDENTIALS_UNAVAILABLE = "credentials_unavailable"  # no token or keys to send yet: nothing was sent

# Failures that say the backend itself is in trouble (counted by passive health).
UNHEALTHY = frozenset({CONNECT_ERROR, TIMEOUT, SERVER_ERROR, BAD_RESPONSE, BACKEND_REJECTED})

_RETRY_ON = {CONNECT_ERROR: "connect-error", TIMEOUT: "timeout", RATE_LIMITED: "429", SERVER_ERROR: "5xx"}


class Failure(msgspec.Struct, frozen=True):
    kind: str
    backend: str
    message: str
    status: int | None = None
    retry_after: float | None = None

    def summary(self) -> str:
        status = f" {self.status}" if self.status else ""
        return f"{self.backend}: {self.kind}{status}: {self.message}"


def kind_for_status(status: int) -> str:
    """The kind of a non-200 answer. Only the error classes the APIs define are errors; any other
    status (201, 204, 3xx, a final 1xx, past 599) is not an answer the call can have: a bad response,
    worth the next backend."""
    if status == 429:
        return RATE_LIMITED
    if status == 408:  # the provider gave up waiting on its model (Bedrock's ModelTimeoutException)
        return TIMEOUT
    if 500 <= status <= 599 or status == 424:  # 424: the model behind the API failed (Bedrock's ModelErrorException)
        return SERVER_ERROR
    if status in (401, 403, 404):
        return BACKEND_REJECTED
    if 400 <= status <= 499:
        return CLIENT_ERROR
    return BAD_RESPONSE


def retryable(kind: str, policy: Retry) -> bool:
    name = _RETRY_ON.get(kind)
    return name is not None and name in policy.retry_on


def worth_another_backend(kind: str) -> bool:
    return kind != CLIENT_ERROR


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(policy: Retry, retry_number: int, failure: Failure, *, draw: float | None = None) -> float | None:
    """Seconds to wait before retry number `retry_number` (1-based), or None to give up on this backend.

    Full jitter (AWS architecture blog) spreads retries of many sidecars apart;
    a provider's Retry-After wins when it asks for longer, unless that is more
    than the policy will wait, in which case the next backend is the better bet.
    """
    if failure.retry_after is not None:
        if failure.retry_after > policy.max_retry_after_seconds:
            return None
        return failure.retry_after
    cap = min(policy.backoff_max_seconds, policy.backoff_base_seconds * 2.0 ** (retry_number - 1))
    return cap * (random.random() if draw is None else draw)
