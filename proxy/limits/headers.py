"""What the app sees of a limit: the rate-limit headers the SDKs read, and the 429 in each API's shape.

Pure functions of a decision and the time. The headers follow the providers' own:

- OpenAI: `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests`,
  and the same for `-tokens`; resets are durations as Go prints them (`1s`, `6m0s`, `20ms`).
- Anthropic: `anthropic-ratelimit-requests-limit`, `-remaining`, `-reset`, and the same for `tokens`,
  `input-tokens` and `output-tokens`; resets are RFC 3339 times (UTC).
- Both: `retry-after` (whole seconds, rounded up) and `retry-after-ms`, which the official SDKs prefer
  for their built-in retry; a spent budget adds `x-should-retry: false` (both SDKs honour it), since
  retrying within seconds cannot help until the window ends.

Each family reports the most restrictive counter of its kind (the least remaining) among those that
bind the request; concurrency and budgets have no SDK header and show only in a refusal.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Literal

from proxy.errors import ApiError
from proxy.limits.model import BUDGETS, MICRO_USD, CounterState, Decision, Measure

Api = Literal["openai", "openai-responses", "anthropic"]

_WHAT: dict[Measure, str] = {
    "requests": "requests per minute",
    "tokens": "tokens per minute",
    "input_tokens": "input tokens per minute",
    "output_tokens": "output tokens per minute",
    "concurrency": "concurrent requests",
    "usd_day": "USD per day",
    "usd_month": "USD per month",
}
_UNIT: dict[Measure, str] = {
    "requests": "requests",
    "tokens": "tokens",
    "input_tokens": "input tokens",
    "output_tokens": "output tokens",
    "concurrency": "requests",
}


def go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration prints it, to the millisecond: `20ms`, `1.5s`, `6m0s`, `1h2m3s`."""
    ms = max(math.ceil(seconds * 1000 - 1e-6), 0)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    secs = f"{whole}.{frac:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs


def rfc3339(timestamp: float) -> str:
    """UTC, to the second, rounded up (a reset reported early would invite a refused retry)."""
    return dt.datetime.fromtimestamp(math.ceil(timestamp - 1e-6), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tightest(states: Sequence[CounterState], measures: tuple[Measure, ...]) -> CounterState | None:
    candidates = [s for s in states if s.counter.measure in measures and not s.unreachable]
    if not candidates:
        return None
    return min(candidates, key=lambda s: (s.remaining, -s.reset_seconds))


def rate_limit_headers(states: Sequence[CounterState], *, api: Api, now: float) -> dict[str, str]:
    """The rate-limit headers for an answer (admitted or refused) whose check gave `states`."""
    headers: dict[str, str] = {}
    if api != "anthropic":  # both OpenAI APIs answer with OpenAI's headers
        families: tuple[tuple[str, tuple[Measure, ...]], ...] = (
            ("requests", ("requests",)),
            ("tokens", ("tokens", "input_tokens", "output_tokens")),
        )
        for family, measures in families:
            state = _tightest(states, measures)
            if state is not None:
                headers[f"x-ratelimit-limit-{family}"] = str(state.counter.limit)
                headers[f"x-ratelimit-remaining-{family}"] = str(state.remaining)
                headers[f"x-ratelimit-reset-{family}"] = go_duration(state.reset_seconds)
        return headers
    anthropic: tuple[tuple[str, Measure], ...] = (
        ("requests", "requests"),
        ("tokens", "tokens"),
        ("input-tokens", "input_tokens"),
        ("output-tokens", "output_tokens"),
    )
    for family, measure in anthropic:
        state = _tightest(states, (measure,))
        if state is not None:
            headers[f"anthropic-ratelimit-{family}-limit"] = str(state.counter.limit)
            headers[f"anthropic-ratelimit-{family}-remaining"] = str(state.remaining)
            headers[f"anthropic-ratelimit-{family}-reset"] = rfc3339(now + state.reset_seconds)
    if "anthropic-ratelimit-tokens-limit" not in headers:  # the SDK's "tokens" reads the tightest kind
        state = _tightest(states, ("input_tokens", "output_tokens"))
        if state is not None:
            headers["anthropic-ratelimit-tokens-limit"] = str(state.counter.limit)
            headers["anthropic-ratelimit-tokens-remaining"] = str(state.remaining)
            headers["anthropic-ratelimit-tokens-reset"] = rfc3339(now + state.reset_seconds)
    return headers


def _usd(micro: int) -> str:
    return f"${micro / MICRO_USD:,.2f}"


def refusal_message(state: CounterState, *, now: float) -> str:
    """Which limit of which policy (or provider quota), what is left, and when it resets."""
    counter = state.counter
    what = _WHAT[counter.measure]
    subject = f"{counter.owner}'s {counter.name}" if counter.capacity else f"limit {counter.name} of {counter.owner}"
    if state.unreachable:
        return (
            f"{subject} ({what}) cannot be checked: the limit counters do not answer, and its failureMode "
            "is closed; retry shortly"
        )
    if counter.measure in BUDGETS:
        return (
            f"{subject} is spent: {_usd(state.remaining)} of {_usd(counter.limit)} {what} left; "
            f"it resets at {rfc3339(now + state.reset_seconds)}"
        )
    if counter.measure == "concurrency":
        retry = go_duration(state.retry_after_seconds)
        return f"{subject} is reached: {counter.limit} {what} are in flight; retry in {retry}"
    full, retry = go_duration(state.reset_seconds), go_duration(state.retry_after_seconds)
    return (
        f"{subject} is reached: {state.remaining} of {counter.limit} {_UNIT[counter.measure]} left this minute "
        f"(a full minute's worth in {full}); retry in {retry}"
    )


def refusal_error(decision: Decision, *, api: Api, now: float) -> ApiError:
    """The error a refused decision answers with; the front end renders it in its API's shape
    (OpenAI `{"error": {message, type, param, code}}`, Anthropic `{"type": "error", "error": {type, message}}`)."""
    state = decision.refusal
    if state is None:
        raise ValueError("the decision admitted the request: there is nothing to refuse")
    retry_after = max(state.retry_after_seconds, 0.001)
    headers = rate_limit_headers(decision.states, api=api, now=now)
    headers["retry-after"] = str(max(math.ceil(retry_after - 1e-6), 1))
    headers["retry-after-ms"] = str(math.ceil(retry_after * 1000 - 1e-6))
    message = refusal_message(state, now=now)
    if state.unreachable:
        return ApiError(503, message, "server_error", "limits_unavailable", headers=headers)
    if state.counter.measure in BUDGETS:
        headers["x-should-retry"] = "false"
        return ApiError(429, message, "insufficient_quota", "insufficient_quota", headers=headers)
    kind = "tokens" if state.counter.measure in ("tokens", "input_tokens", "output_tokens") else "requests"
    return ApiError(429, message, kind, "rate_limit_exceeded", headers=headers)
