"""What became of one request: the record every reader at its end takes its facts from.

The account stage builds one `Outcome` per request, whatever happened to it (answered, failed,
refused, rejected before a route was chosen, abandoned by the client), and hands the same object
to the server span, the metrics, the audit log and the access log, so they can never disagree.
Pure: no I/O.

Both records are named tuples: immutable like a frozen dataclass, but made in one C call instead
of a setattr per field (a frozen dataclass of this size costs ~3 us per request to build).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, NamedTuple

from proxy.providers.base import Usage

# allow: served as the route says; reroute: served after a policy took some backends out;
# refuse: a policy left nothing; "": no route was chosen (rejected before planning).
Decision = Literal["allow", "reroute", "refuse", ""]

NO_USAGE = Usage()
NOTHING_FOUND: Mapping[str, int] = MappingProxyType({})

# Status of a request whose client left before its answer began (nginx's convention: no status
# was sent, and none of the HTTP ones would say what happened).
CLIENT_CLOSED = 499
CLIENT_DISCONNECTED = "client_disconnected"


class Attempt(NamedTuple):
    """One call to a provider."""

    backend: str  # the backend key, "<provider>/<model>"
    fallback: bool  # one of the rule's fallbacks (False: the weighted pick)
    error_type: str | None  # a proxy.upstream kind; None: answered
    seconds: float  # from sending to the last byte (or the failure)


class Outcome(NamedTuple):
    """`proxy.request.account` builds it positionally on the hot path: a new field goes at the end."""

    operation: str  # "chat", "embeddings" or "count_tokens"
    model: str  # the model the app asked for
    stream: bool
    workload: str  # the workload identity the controller verified ("" with no snapshot yet)
    data_class: str  # "" when the request was rejected before it was classified
    route: str  # "" when no route was chosen
    rule: str
    decision: Decision
    backend: str | None  # the backend whose answer the app got (None: no backend answered)
    response_model: str | None
    usage: Usage
    cost: float | None  # USD, from the backend's pricing; None without pricing or usage
    attempts: tuple[Attempt, ...]
    status: int  # the HTTP status the app got (CLIENT_CLOSED when it left before any)
    error_type: str | None  # None: answered in full
    # Why it failed, for the span's status only: it can quote the provider, so it is never logged.
    error_message: str
    ttft: float | None  # streams: seconds from the request to the first content
    duration: float  # seconds, the whole request through the sidecar
    trace_id: str  # 32 hex digits, "" when the request is not traced
    personal_data: Mapping[str, int]  # what the scan found, by kind: counts, never values
    policies: tuple[str, ...] = ()  # the policies behind a reroute or refusal
    policy_reason: str = ""  # what they did, in words (for the audit log)
    # What was masked in the request the answering backend got, by kind: counts, never values.
    redacted: Mapping[str, int] = NOTHING_FOUND
    redacted_by: tuple[str, ...] = ()  # the policies that asked for the masking
