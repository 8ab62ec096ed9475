"""Masking on the request path: part of the attempt stage (`proxy.request.attempt`).

A `Masking` lives as long as one request. For each backend the attempts try it answers which
request to send: the parsed one as it is (the backend needs no masking for this data class), or
the one its policy's `redact` rule rewrote (`proxy.redaction`). The original stays intact, so a
fallback to a backend that needs no masking gets the request the app sent; retries and backends
sharing a rule get the same placeholders. The answer is restored on its way to the app: whole
answers with `restore`, streams by wrapping the front end's encoder (`frontend`).

A request never reaching a backend that masks builds nothing: one dict lookup per backend. A backend
that masks never gets the app's own body through the same-API pass-through (`proxy.request.passthrough`):
masking works on the internal form, so that attempt takes the translated path.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from proxy.errors import ApiError
from proxy.frontends.base import Frontend, StreamEncoder
from proxy.policy.classify import body_text
from proxy.providers.base import ChatRequest, ChatResponse
from proxy.routing.table import Plan
from proxy.runtime import Runtime
from proxy.snapshot import DATA_CLASS_RANK

if TYPE_CHECKING:
    # The masking code is imported where a backend first masks (`_pseudonymizer`): a sidecar whose
    # policies redact nothing never holds it.
    from proxy.redaction import Pseudonymizer, Redacted, RedactionRule
    from proxy.redaction.table import BackendRule, RedactionTable

NOTHING: Mapping[str, int] = MappingProxyType({})
_SHOWN_FIELDS = 3  # an error names this many fields at most
_PERSONAL = DATA_CLASS_RANK["personal"]


def masking_for(runtime: Runtime, plan: Plan) -> Masking:
    """The request's masking. A workload that scans for personal data scans every request below
    `personal`, and raises it to `personal` when it finds some: a request still below it was scanned
    and found clean."""
    policy = runtime.snapshot.policy
    clean = policy.detect_personal_data and DATA_CLASS_RANK.get(plan.data_class, 0) < _PERSONAL
    return Masking(runtime.redactions, plan.data_class, scanned_clean=clean)


class Masking:
    """One request's masking, across all its attempts."""

    __slots__ = ("_clean", "_data_class", "_done", "_pseudonymizers", "_table", "used")

    def __init__(self, table: RedactionTable, data_class: str, *, scanned_clean: bool = False) -> None:
        """`scanned_clean`: the personal-data scan read this request and found nothing. It reads a
        superset of what masking reads (URLs, text files decoded), with every built-in kind, so a
        rule without custom patterns would find nothing either: such rules are skipped."""
        self._table = table
        self._data_class = data_class
        self._clean = scanned_clean
        # Made on first use: most requests never reach a backend that masks.
        self._pseudonymizers: dict[RedactionRule, Pseudonymizer] | None = None
        self._done: dict[RedactionRule, Redacted] | None = None
        # The last request handed out: (its rule, the pseudonymizer, its counts), None when unmasked.
        self.used: tuple[BackendRule, Pseudonymizer, Mapping[str, int]] | None = None

    def rule(self, backend: str) -> BackendRule | None:
        return self._table.rule_for(backend, self._data_class) if self._table else None

    def request_for(self, backend: str, request: ChatRequest) -> ChatRequest:
        """What to send `backend`: `request`, or its masked copy. Raises ApiError (400) when the rule
        finds a value where no placeholder can go: this backend must not get it (the attempt stage
        then moves on to the next backend)."""
        chosen = self._table.rule_for(backend, self._data_class) if self._table else None
        if chosen is None or (self._clean and not chosen.rule.custom_names):
            self.used = None
            return request
        rule = chosen.rule
        pseudonymizer = self._pseudonymizer(rule)
        redacted = self._redacted(rule, request)
        if redacted.unmasked:
            self.used = None
            kinds = ", ".join(f"{kind} ({count})" for kind, count in sorted(redacted.unmasked.items()))
            fields = ", ".join(_unmaskable_fields(rule, redacted.request)) or "a field that names or encodes things"
            raise ApiError(
                400,
                f"{backend} may receive this {self._data_class} request only with its personal data masked "
                f"({', '.join(chosen.policies)}), but the request holds {kinds} where no placeholder can go: "
                f"{fields}. Move the value into message text, or send the request with a data class that "
                "needs no masking.",
                "invalid_request_error",
                "unmaskable_personal_data",
            )
        self.used = (chosen, pseudonymizer, redacted.counts)
        return redacted.request

    def embeddings_for(self, backend: str, body: dict[str, Any]) -> dict[str, Any]:
        """What to send `backend` of an embeddings request. Vectors cannot be restored: masked only when
        the rule leaves placeholders anyway (`restore: false`); otherwise this backend is refused."""
        chosen = self.rule(backend)
        if chosen is None:
            return body
        if chosen.rule.restore:
            raise ApiError(
                400,
                f"{backend} may receive this {self._data_class} request only with its personal data masked "
                f"({', '.join(chosen.policies)}), and embeddings of masked text cannot be given their values "
                "back; use a model that needs no masking for this data class",
                "invalid_request_error",
                "unmaskable_personal_data",
            )
        return self.request_for(backend, body)

    def for_capture(self, plan: Plan, request: ChatRequest) -> ChatRequest:
        """The request as telemetry may record it: masked when any backend of the plan masks it."""
        if not self._table:
            return request
        for candidate in plan.candidates:
            chosen = self.rule(candidate.backend.key)
            if chosen is not None:
                return self._redacted(chosen.rule, request).request
        return request

    # --- the answer ------------------------------------------------------------------------------

    @property
    def restores(self) -> bool:
        """Whether the answer of the backend last sent to needs its values put back."""
        return self.used is not None and self.used[1].restores

    def restore(self, response: ChatResponse) -> ChatResponse:
        return self.used[1].restore_response(response) if self.used is not None else response

    def frontend(self, frontend: Any) -> Any:
        """`frontend`, or one whose stream encoders restore the values (for the backend last sent to)."""
        if self.used is None or not self.used[1].restores:
            return frontend
        return _RestoringFrontend(frontend, self.used[1])

    @property
    def counts(self) -> Mapping[str, int]:
        """What was masked in the request the answering backend got, by kind (0s left out)."""
        if self.used is None:
            return NOTHING
        return MappingProxyType({kind: n for kind, n in self.used[2].items() if n})

    @property
    def policies(self) -> tuple[str, ...]:
        return self.used[0].policies if self.used is not None else ()

    def _redacted(self, rule: RedactionRule, request: ChatRequest) -> Redacted:
        """The request masked by `rule`, once per request (retries send the same bytes)."""
        if self._done is None:
            self._done = {}
        redacted = self._done.get(rule)
        if redacted is None:
            redacted = self._done[rule] = self._pseudonymizer(rule).redact_chat(request)
        return redacted

    def _pseudonymizer(self, rule: RedactionRule) -> Pseudonymizer:
        if self._pseudonymizers is None:
            self._pseudonymizers = {}
        pseudonymizer = self._pseudonymizers.get(rule)
        if pseudonymizer is None:
            from proxy.redaction import Pseudonymizer

            pseudonymizer = self._pseudonymizers[rule] = Pseudonymizer(rule)
        return pseudonymizer


class _RestoringFrontend:
    """A front end whose stream encoders put the values back before encoding (see StreamCapture)."""

    def __init__(self, frontend: Frontend, pseudonymizer: Pseudonymizer) -> None:
        self._frontend, self._pseudonymizer = frontend, pseudonymizer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._frontend, name)

    def stream_encoder(self, *, include_usage: bool) -> StreamEncoder:
        inner = self._frontend.stream_encoder(include_usage=include_usage)
        from proxy.redaction import restoring_encoder

        return restoring_encoder(inner, self._pseudonymizer.stream_restorer())


def _unmaskable_fields(rule: RedactionRule, request: ChatRequest) -> list[str]:
    """Where the masked request still holds something the rule finds (error path only): paths like
    `messages[1].content[0].image_url.url`, or `an object key`."""
    found: list[str] = []
    stack: list[tuple[Any, str]] = [(request, "")]
    while stack and len(found) < _SHOWN_FIELDS:
        node, path = stack.pop()
        if isinstance(node, dict):
            if any(rule.find(key) for key in node if isinstance(key, str)):
                found.append(f"an object key in {path or 'the request'}")
            items: Any = [(f"{path}.{key}" if path else str(key), value) for key, value in node.items()]
        elif isinstance(node, list):
            items = [(f"{path}[{index}]", value) for index, value in enumerate(node)]
        else:
            continue
        for where, value in reversed(items):
            if isinstance(value, str):
                if rule.find(body_text(value)):
                    found.append(where)
            elif isinstance(value, (dict, list)):
                stack.append((value, where))
    return found[:_SHOWN_FIELDS]
