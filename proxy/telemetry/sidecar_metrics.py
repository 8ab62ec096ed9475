"""The sidecar's metrics: what it records per request, attempt, fallback and retry.

Names follow the OpenTelemetry GenAI semantic conventions v1.37.0 where they
define one (`gen_ai.client.token.usage`, `gen_ai.client.operation.duration`,
`gen_ai.server.time_to_first_token`, with their advised bucket boundaries and
attributes), and `modelway.*` otherwise. The recording methods are on the
request path: each is a few dict and list operations (see `proxy.telemetry.metrics`).

A backend's attributes (provider, upstream model, server address and port,
backend key) are computed once per snapshot (`proxy.telemetry.backends.BackendCatalog`)
and travel as one tuple, so a request builds no attribute dicts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from proxy.runtime import RuntimeHolder
from proxy.telemetry.backends import BACKEND, BackendInfo
from proxy.telemetry.metrics import COUNTER, FOLD_AT, GAUGE, Labels, Pending, Registry, finite, fold

# semconv v1.37.0 advisory bucket boundaries
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

NO_BACKEND: Labels = (None, None, None, None, None)  # a request that no backend answered

OK, ERROR, CLIENT_GONE = "ok", "error", "client_disconnected"


# gen_ai.token.type for the input tokens read from a prompt cache (semconv names only input and
# output; these are also counted in `input`).
CACHE_READ = "cache_read"


class NoMetrics:
    """Telemetry off: every recording is a no-op (the same methods as SidecarMetrics)."""

    registry: Registry | None = None

    def attempt(self, *, operation: str, route: str, info: BackendInfo, error_type: str | None, seconds: float) -> None:
        pass

    def fallback(self, *, route: str, info: BackendInfo, reason: str) -> None:
        pass

    def retry(self, *, route: str, info: BackendInfo, reason: str) -> None:
        pass

    def request(
        self,
        *,
        operation: str,
        route: str,
        info: BackendInfo | None,
        outcome: str,
        error_type: str | None,
        seconds: float,
        input_tokens: int | None,
        output_tokens: int | None,
        cost: float | None,
        ttft: float | None,
        cached_tokens: int | None = None,
        attempt_seconds: float | None = None,
    ) -> None:
        pass

    def policy_refusal(self, *, route: str, policy: str, data_class: str) -> None:
        pass

    def policy_reroute(self, *, route: str, policy: str, data_class: str) -> None:
        pass

    def personal_data(self, counts: Mapping[str, int]) -> None:
        pass

    def limit_refusal(self, *, route: str, owner: str, name: str, measure: str) -> None:
        pass

    def limit_store_unavailable(self, *, failure_mode: str) -> None:
        pass

    def capacity_skip(self, *, route: str, backend: str) -> None:
        pass

    def backpressure_refusal(self, *, route: str, scope: str) -> None:
        pass

    def watch_in_flight(self, read: Callable[[], Iterable[tuple[str, int]]]) -> None:
        pass

    def redactions(self, counts: Mapping[str, int]) -> None:
        pass

    def guardrail(self, *, guardrail: str, phase: str, decision: str) -> None:
        pass

    def guardrail_latency(self, *, phase: str, seconds: float) -> None:
        pass

    def experiment(
        self,
        *,
        experiment: str,
        arm: str,
        error_type: str | None,
        seconds: float,
        cost: float | None,
        ttft: float | None,
    ) -> None:
        pass


class SidecarMetrics(NoMetrics):
    def __init__(
        self,
        *,
        registry: Registry,
        holder: RuntimeHolder | None = None,
        telemetry_drops: Callable[[], Iterable[tuple[Labels, float]]] = lambda: (),
    ) -> None:
        self.registry = registry
        # (operation, route, backend labels, outcome, error type) -> the request's series, found with
        # one hash instead of one per instrument; each series' cells are made when first used.
        self._series: dict[tuple[Any, ...], _Series] = {}
        op, route = "gen_ai.operation.name", "modelway.route"
        self.token_usage = registry.histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            bounds=TOKEN_BUCKETS,
            description="Number of input and output tokens used, per provider call that reported usage.",
            attributes=(op, route, BACKEND, "gen_ai.token.type"),
        )
        self.operation_duration = registry.histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            bounds=DURATION_BUCKETS,
            description="GenAI operation duration: one provider attempt, from sending to the last byte.",
            attributes=(op, route, BACKEND, "error.type"),
        )
        self.time_to_first_token = registry.histogram(
            "gen_ai.server.time_to_first_token",
            unit="s",
            bounds=TTFT_BUCKETS,
            description="Time from the app's request to the first streamed content, for streams that got one.",
            attributes=(op, route, BACKEND),
        )
        self.requests = registry.counter(
            "modelway.requests",
            unit="{request}",
            description="Requests the sidecar answered, by route, backend and outcome (ok, error, "
            "client_disconnected); error.type says why.",
            attributes=(op, route, BACKEND, "modelway.outcome", "error.type"),
        )
        self.request_duration = registry.histogram(
            "modelway.request.duration",
            unit="s",
            bounds=DURATION_BUCKETS,
            description="Whole request through the sidecar, retries and fallbacks included.",
            attributes=(op, route, "modelway.outcome"),
        )
        self.fallbacks = registry.counter(
            "modelway.fallbacks",
            unit="{fallback}",
            description="Moves to the next backend; modelway.backend is the one fallen back to.",
            attributes=(route, BACKEND, "modelway.fallback.reason"),
        )
        self.retries = registry.counter(
            "modelway.retries",
            unit="{retry}",
            description="Retries of a backend after a retryable failure.",
            attributes=(route, BACKEND, "modelway.retry.reason"),
        )
        self.policy_refusals = registry.counter(
            "modelway.policy.refusals",
            unit="{request}",
            description="Requests refused by a ModelPolicy.",
            attributes=(route, "modelway.policy", "modelway.data_class"),
        )
        self.policy_reroutes = registry.counter(
            "modelway.policy.reroutes",
            unit="{request}",
            description="Requests served after a ModelPolicy removed some of their route's backends.",
            attributes=(route, "modelway.policy", "modelway.data_class"),
        )
        self.personal_data_found = registry.counter(
            "modelway.policy.personal_data",
            unit="{finding}",
            description="Personal data found in prompts by the scan, by kind (counted, never logged).",
            attributes=("modelway.personal_data.kind",),
        )
        self.limit_refusals = registry.counter(
            "modelway.limits.refusals",
            unit="{request}",
            description="Requests answered 429 (or 503: a closed limit the store could not check) by a limit, "
            "a budget or a provider's capacity.",
            attributes=(route, "modelway.limit.owner", "modelway.limit.name", "modelway.limit.measure"),
        )
        self.limit_store_unavailable_total = registry.counter(
            "modelway.limits.store_unavailable",
            unit="{decision}",
            description="Limit checks decided without the shared counter store (down or slow), by the "
            "failure mode that decided them (open: served uncounted; closed: refused).",
            attributes=("modelway.limit.failure_mode",),
        )
        self.capacity_skips = registry.counter(
            "modelway.limits.capacity_skips",
            unit="{backend}",
            description="Backends skipped before the call because their provider's capacity was spent "
            "(quota-aware failover to the next backend).",
            attributes=(route, "modelway.backend"),
        )
        self.backpressure_refusals = registry.counter(
            "modelway.backpressure.refusals",
            unit="{request}",
            description="Requests answered 503 because the sidecar's in-flight bound was reached: for the "
            "route, or for every backend tried (scope); a full backend that spilled to the next is a fallback.",
            attributes=(route, "modelway.backpressure.scope"),
        )
        self.redacted = registry.counter(
            "modelway.redactions",
            unit="{value}",
            description="Values masked before a request went to a provider, by kind (counted, never logged).",
            attributes=("modelway.redaction.kind",),
        )
        self.guardrail_decisions = registry.counter(
            "modelway.guardrail.decisions",
            unit="{decision}",
            description="Guardrail answers, by guardrail, phase (request, response) and decision (allow, deny, "
            "replace; error_open and error_closed: not answered in time or usably, by failure mode).",
            attributes=("modelway.guardrail", "modelway.guardrail.phase", "modelway.guardrail.decision"),
        )
        self.guardrail_duration = registry.histogram(
            "modelway.guardrail.duration",
            unit="s",
            bounds=TTFT_BUCKETS,
            description="Latency guardrail checks added: one check (its guardrails asked in parallel), by phase.",
            attributes=("modelway.guardrail.phase",),
        )
        experiment, arm = "modelway.experiment", "modelway.arm"
        self.experiment_requests = registry.counter(
            "modelway.experiment.requests",
            unit="{request}",
            description="Requests an experiment's arm served, by outcome (ok, error, client_disconnected); "
            "error.type says why.",
            attributes=(experiment, arm, "modelway.outcome", "error.type"),
        )
        self.experiment_duration = registry.histogram(
            "modelway.experiment.request.duration",
            unit="s",
            bounds=DURATION_BUCKETS,
            description="Whole request through the sidecar, per experiment and arm.",
            attributes=(experiment, arm, "modelway.outcome"),
        )
        self.experiment_ttft = registry.histogram(
            "modelway.experiment.time_to_first_token",
            unit="s",
            bounds=TTFT_BUCKETS,
            description="Time to the first streamed content, per experiment and arm.",
            attributes=(experiment, arm),
        )
        self.experiment_cost = registry.counter(
            "modelway.experiment.cost",
            unit="USD",
            description="Cost of an experiment's answered requests in USD, per arm.",
            attributes=(experiment, arm),
        )
        self.cost_usd = registry.counter(
            "modelway.cost",
            unit="USD",
            description="Cost of answered requests in USD, from the provider's per-model pricing.",
            attributes=(op, route, BACKEND),
        )

        def snapshot_age() -> list[tuple[Labels, float]]:
            runtime = holder.current if holder is not None else None
            return [((runtime.snapshot.version,), time.time() - runtime.received_at)] if runtime else []

        registry.observed(
            "modelway.snapshot.age",
            kind=GAUGE,
            unit="s",
            callback=snapshot_age,
            description="Seconds since the snapshot this sidecar serves was received.",
            attributes=("modelway.snapshot.version",),
        )
        self._in_flight: Callable[[], Iterable[tuple[str, int]]] = lambda: ()
        registry.observed(
            "modelway.backpressure.in_flight",
            kind=GAUGE,
            unit="{request}",
            callback=lambda: [((key,), count) for key, count in self._in_flight()],
            description="Calls holding one of a backend's in-flight slots (--max-in-flight-per-backend).",
            attributes=("modelway.backend",),
        )
        registry.observed(
            "modelway.telemetry.dropped",
            kind=COUNTER,
            unit="{item}",
            callback=telemetry_drops,
            description="Spans and metric exports lost: queue full, or the collector failed or was away.",
            attributes=("modelway.signal", "modelway.reason"),
        )

    # --- on the request path ---------------------------------------------------------

    def attempt(self, *, operation: str, route: str, info: BackendInfo, error_type: str | None, seconds: float) -> None:
        self.operation_duration.record((operation, route, info.labels, error_type), seconds)

    def fallback(self, *, route: str, info: BackendInfo, reason: str) -> None:
        self.fallbacks.add((route, info.labels, reason))

    def retry(self, *, route: str, info: BackendInfo, reason: str) -> None:
        self.retries.add((route, info.labels, reason))

    def request(
        self,
        *,
        operation: str,
        route: str,
        info: BackendInfo | None,
        outcome: str,
        error_type: str | None,
        seconds: float,
        input_tokens: int | None,
        output_tokens: int | None,
        cost: float | None,
        ttft: float | None,
        cached_tokens: int | None = None,
        attempt_seconds: float | None = None,
    ) -> None:
        """`attempt_seconds`: the request's one attempt, answered by `info`'s backend (its
        gen_ai.client.operation.duration, as `attempt` would record it, without another lookup)."""
        labels = info.labels if info is not None else NO_BACKEND
        key = (operation, route, labels, outcome, error_type)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(
                self.requests.cell((operation, route, labels, outcome, error_type)),
                self.request_duration.series((operation, route, outcome)),
            )
        series.requests[0] += 1
        # Histogram values are appended, folded into their points once FOLD_AT are there (proxy.telemetry.metrics).
        durations = series.duration
        durations.append(seconds)
        if attempt_seconds is not None:
            pending = series.attempt
            if pending is None:
                pending = series.attempt = self.operation_duration.series((operation, route, labels, None))
            pending.append(attempt_seconds)
        if input_tokens is not None:
            pending = series.tokens_in
            if pending is None:
                pending = series.tokens_in = self.token_usage.series((operation, route, labels, "input"))
            pending.append(input_tokens)
        if output_tokens is not None:
            pending = series.tokens_out
            if pending is None:
                pending = series.tokens_out = self.token_usage.series((operation, route, labels, "output"))
            pending.append(output_tokens)
        if cached_tokens:  # the input's part read from the prompt cache (token type `cache_read`)
            pending = series.tokens_cached
            if pending is None:
                pending = series.tokens_cached = self.token_usage.series((operation, route, labels, CACHE_READ))
            pending.append(cached_tokens)
        if cost is not None and finite(cost):
            cell = series.cost
            if cell is None:
                cell = series.cost = self.cost_usd.cell((operation, route, labels))
            cell[0] += cost
        if ttft is not None:
            pending = series.ttft
            if pending is None:
                pending = series.ttft = self.time_to_first_token.series((operation, route, labels))
            pending.append(ttft)
        if len(durations) >= FOLD_AT:  # one check for all: no list grows faster, but for those series share
            series.fold()

    def policy_refusal(self, *, route: str, policy: str, data_class: str) -> None:
        """For the policy code: one request refused by `policy` for its data class."""
        self.policy_refusals.add((route, policy, data_class))

    def policy_reroute(self, *, route: str, policy: str, data_class: str) -> None:
        """One request whose route lost backends to `policy` for its data class."""
        self.policy_reroutes.add((route, policy, data_class))

    def limit_refusal(self, *, route: str, owner: str, name: str, measure: str) -> None:
        self.limit_refusals.add((route, owner, name, measure))

    def limit_store_unavailable(self, *, failure_mode: str) -> None:
        self.limit_store_unavailable_total.add((failure_mode,))

    def capacity_skip(self, *, route: str, backend: str) -> None:
        self.capacity_skips.add((route, backend))

    def personal_data(self, counts: Mapping[str, int]) -> None:
        """What the personal-data scan found in one prompt: how many of each kind, never what."""
        for kind, count in counts.items():
            self.personal_data_found.add((kind,), count)

    def backpressure_refusal(self, *, route: str, scope: str) -> None:
        """One request refused 503 by an in-flight bound (`proxy.request.backpressure`)."""
        self.backpressure_refusals.add((route, scope))

    def watch_in_flight(self, read: Callable[[], Iterable[tuple[str, int]]]) -> None:
        """Where the gauge of requests in flight per backend reads them (when scraped or exported)."""
        self._in_flight = read

    def redactions(self, counts: Mapping[str, int]) -> None:
        """What was masked in the request the answering provider got: how many of each kind, never what."""
        for kind, count in counts.items():
            self.redacted.add((kind,), count)

    def guardrail(self, *, guardrail: str, phase: str, decision: str) -> None:
        self.guardrail_decisions.add((guardrail, phase, decision))

    def guardrail_latency(self, *, phase: str, seconds: float) -> None:
        self.guardrail_duration.record((phase,), seconds)

    def experiment(
        self,
        *,
        experiment: str,
        arm: str,
        error_type: str | None,
        seconds: float,
        cost: float | None,
        ttft: float | None,
    ) -> None:
        """One request that an experiment's arm served (only those: the rest have no experiment)."""
        outcome = OK if error_type is None else CLIENT_GONE if error_type == "client_disconnected" else ERROR
        self.experiment_requests.add((experiment, arm, outcome, error_type))
        self.experiment_duration.record((experiment, arm, outcome), seconds)
        if ttft is not None:
            self.experiment_ttft.record((experiment, arm), ttft)
        if cost is not None and finite(cost):
            self.experiment_cost.add((experiment, arm), cost)


class _Series:
    """The cells and pending histogram values one kind of request updates (see SidecarMetrics.request)."""

    __slots__ = ("attempt", "cost", "duration", "requests", "tokens_cached", "tokens_in", "tokens_out", "ttft")

    def __init__(self, requests: list[float], duration: Pending) -> None:
        self.requests, self.duration = requests, duration
        self.cost: list[float] | None = None
        self.tokens_in: Pending | None = None
        self.tokens_out: Pending | None = None
        self.tokens_cached: Pending | None = None
        self.ttft: Pending | None = None
        self.attempt: Pending | None = None

    def fold(self) -> None:
        for pending in (self.duration, self.attempt, self.tokens_in, self.tokens_out, self.tokens_cached, self.ttft):
            if pending:
                fold(pending)


def telemetry_drops(
    *, span_queue: Any = None, span_exporter: Any = None, metric_export: Any = None
) -> Callable[[], list[tuple[Labels, float]]]:
    """The callback for modelway.telemetry.dropped, reading counters the exporters keep."""

    def read() -> list[tuple[Labels, float]]:
        out: list[tuple[Labels, float]] = []
        if span_queue is not None:
            out.append((("spans", "queue_full"), span_queue.dropped_spans))
        if span_exporter is not None and hasattr(span_exporter, "failed_spans"):
            # (with the spans the lean queue could not encode: lost on the way to the collector too)
            unencoded = getattr(span_queue, "failed_spans", 0)
            out.append((("spans", "export_failed"), span_exporter.failed_spans + unencoded))
        if metric_export is not None:
            out.append((("metrics", "queue_full"), metric_export.dropped_exports))
            out.append((("metrics", "export_failed"), metric_export.failed_exports))
        return out

    return read
