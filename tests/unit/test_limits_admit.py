"""The admit stage without sockets: what a limiter's answer means for the next step, what a request is
charged at its end, which limiter counts (built only when needed, rebuilt when the store changes), and
a request's Gate over the in-process limiter: go, skip, reroute, refuse, settle."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from opentelemetry.trace import INVALID_SPAN_CONTEXT, SpanContext

from proxy.errors import ApiError
from proxy.limits import gate as rules
from proxy.limits.memory import InProcessLimiter
from proxy.limits.model import Counter, CounterState, Decision, Demand, Reservation, Usage
from proxy.limits.settings import Limiter, LimitSettings
from proxy.limits.slot import LimiterSlot
from proxy.policy.audit import AuditLog
from proxy.policy.classify import Classification
from proxy.providers.base import Usage as AnswerUsage
from proxy.request.admit import Admission
from proxy.request.gate import GO, SKIP, Gate
from proxy.request.outcome import CLIENT_CLOSED, NO_USAGE, Outcome
from proxy.routing.health import OutlierDetector
from proxy.routing.table import Plan
from proxy.runtime import Runtime
from proxy.snapshot import LimitStore, RerouteBackend, parse_snapshot, parse_struct
from proxy.telemetry import Telemetry
from proxy.telemetry.metrics import Registry, render_prometheus
from proxy.telemetry.sidecar_metrics import SidecarMetrics

KEY = "sk-test-key-1234567890"
STORE_PASSWORD = "store-pass-7f3a91c2"


def _counter(measure: Any = "requests", **extra: Any) -> Counter:
    return Counter(key=f"k/{measure}", measure=measure, limit=10, owner="ModelPolicy a/b", name="n",
                   failure_mode="open", **extra)  # fmt: skip


def _state(counter: Counter, ok: bool) -> CounterState:
    return CounterState(counter, ok, 0, 1.0, 0.0 if ok else 2.0)


def _refused(*counters: Counter) -> Decision:
    from proxy.limits.algorithm import decide

    return decide([_state(c, False) for c in counters], None)


# --- pure decisions ---------------------------------------------------------------------------


def test_each_answer_of_the_limiter_is_one_step() -> None:
    assert rules.step(Decision(True, (), None)) == "go"
    assert rules.step(_refused(_counter(capacity=True))) == "skip"
    cheaper = (RerouteBackend(provider="cheap", model="m"),)
    assert rules.step(_refused(_counter("usd_day", reroute_to=cheaper))) == "reroute"
    assert rules.step(_refused(_counter("usd_day", reroute_to=cheaper), _counter("tokens"))) == "refuse"
    assert rules.step(_refused(_counter(capacity=True), _counter("tokens"))) == "refuse"  # a policy's limit binds


def test_the_answering_backend_is_charged_what_it_reported_and_the_estimate_for_what_it_did_not() -> None:
    demand = Demand(100, 500)
    assert rules.settled_usage(demand, "answered", AnswerUsage(7, 30)) == Usage(7, 30)
    assert rules.settled_usage(demand, "answered", AnswerUsage(7, None)) == Usage(7, 500)  # cut after its start
    assert rules.settled_usage(demand, "answered", None) == Usage(100, 500)
    assert rules.settled_usage(demand, "abandoned", AnswerUsage(7, 30)) == Usage(100, 500)
    assert rules.settled_usage(demand, "failed", AnswerUsage(7, 30)) == Usage(0, 0)


def test_a_budget_is_charged_the_answers_priced_cost_and_the_estimates_price_of_what_it_did_not_report() -> None:
    demand = Demand(100, 500, 2.0, 8.0)  # micro-USD per token
    # 1024 of 1031 input tokens read from the prompt cache: the span's cost, not 1031 * 2.0 + 30 * 8.0
    cached = rules.settled_usage(demand, "answered", AnswerUsage(1031, 30, 1024), cost=0.000459)
    assert cached == Usage(1031, 30, 459)
    assert rules.settled_usage(demand, "answered", AnswerUsage(1031, None, 1024), cost=0.000219) == Usage(
        1031, 500, 219 + 500 * 8
    )  # cut after its start: the output it never reported at the estimate's price
    assert rules.settled_usage(demand, "answered", AnswerUsage(7, 30)) == Usage(7, 30)  # unpriced: tokens only
    assert rules.settled_usage(demand, "abandoned", AnswerUsage(7, 30), cost=0.001) == Usage(100, 500)
    budget = Reservation("lease", (_counter("usd_day"),), ("",), demand)
    assert rules.changes_anything(budget, Usage(100, 500, 459))
    assert not rules.changes_anything(budget, Usage(7, 30, demand.micro_usd()))


def test_a_settlement_that_would_change_nothing_is_not_sent() -> None:
    demand = Demand(100, 500, 2.0, 8.0)

    def reservation(*measures: Any) -> Reservation:
        return Reservation("lease", tuple(_counter(m) for m in measures), ("",) * len(measures), demand)

    assert not rules.changes_anything(reservation("requests"), Usage(7, 30))  # a request is a request
    assert not rules.changes_anything(reservation("tokens", "usd_day"), Usage(100, 500))  # the estimate was right
    assert rules.changes_anything(reservation("requests", "tokens"), Usage(7, 30))
    assert rules.changes_anything(reservation("usd_day"), Usage(100, 499))
    assert rules.changes_anything(reservation("requests", "concurrency"), Usage(100, 500))  # the lease goes back


def test_an_embedding_reserves_no_output() -> None:
    chat = rules.demand_for(prompt_bytes=100, requested_output=None, pricing=None, embeddings=False)
    embedding = rules.demand_for(prompt_bytes=100, requested_output=None, pricing=None, embeddings=True)
    assert chat.input_tokens == embedding.input_tokens == 50
    assert chat.output_tokens > 0 and embedding.output_tokens == 0


# --- which limiter --------------------------------------------------------------------------


class _Built:
    def __init__(self, settings: LimitSettings) -> None:
        self.settings, self.closed = settings, False

    async def reserve(self, *args: Any, **kwargs: Any) -> Decision:
        raise NotImplementedError

    async def settle(self, reservation: Reservation, usage: Usage) -> None:
        return None

    async def close(self) -> None:
        self.closed = True


def _slot(flags: LimitSettings) -> tuple[LimiterSlot, list[_Built]]:
    built: list[_Built] = []

    def build(settings: LimitSettings) -> Limiter:
        built.append(_Built(settings))
        return built[-1]

    return LimiterSlot(flags, build=build), built


def _store(url: str) -> LimitStore:
    return parse_struct(LimitStore, {"url": url, "timeoutSeconds": 0.3})


async def test_the_snapshots_store_wins_then_the_flag_then_the_process() -> None:
    slot, built = _slot(LimitSettings())
    assert slot.current is None and not built  # nothing until a snapshot with limits asks
    assert slot.get(None).store == "in-process" and built[-1].settings.redis_url is None
    slot, built = _slot(LimitSettings(redis_url="redis://flag:6379/0"))
    assert slot.get(None).source == "flags" and built[-1].settings.redis_url == "redis://flag:6379/0"
    handle = slot.get(_store("redis://store:6379/0"))
    assert handle.source == "snapshot" and built[-1].settings.redis_url == "redis://store:6379/0"
    assert built[-1].settings.timeout_seconds == 0.3


async def test_the_limiter_is_kept_while_the_store_is_the_same_and_the_old_one_closed_once_released() -> None:
    slot, built = _slot(LimitSettings())
    first = slot.get(_store("redis://a:6379/0"))
    assert slot.get(_store("redis://a:6379/0")) is first and len(built) == 1  # an equal store: the same counters
    first.acquire()  # a request still holds a reservation on it
    second = slot.get(_store("redis://b:6379/0"))
    assert second is not first and len(built) == 2
    await _tick()
    assert not built[0].closed
    first.release()
    await _tick()
    assert built[0].closed and not built[1].closed


async def test_a_store_that_cannot_be_used_leaves_each_limit_to_its_failure_mode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def build(settings: LimitSettings) -> Limiter:
        raise ValueError(f"bad URL {settings.redis_url}")

    slot = LimiterSlot(LimitSettings(), build=build)
    with caplog.at_level(logging.ERROR, logger="modelway.limits"):
        handle = slot.get(_store(f"redis://:{STORE_PASSWORD}@host:port/0"))
    assert STORE_PASSWORD not in caplog.text and "cannot be used (ValueError)" in caplog.text
    closed = Counter("k/usd_day", "usd_day", 5, "ModelPolicy a/b", "budget", "closed")
    decision = await handle.limiter.reserve([_counter(), closed], Demand(1, 1), lease_seconds=30)
    assert not decision.allowed and decision.store_unreachable and decision.refusal is not None
    assert decision.refusal.counter == closed
    assert (await handle.limiter.reserve([_counter()], Demand(1, 1), lease_seconds=30)).allowed


def test_the_flag_refuses_a_url_it_cannot_use_without_echoing_it(capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.options import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--controller", "https://c", "--limits-redis-url", f"http://:{STORE_PASSWORD}@h/0"])
    err = capsys.readouterr().err
    assert "--limits-redis-url must start with" in err and STORE_PASSWORD not in err
    args = parse_args(["--controller", "https://c", "--limits-redis-url", "redis://h:6379/0", "--limits-redis-cluster"])
    assert args.limits_redis_cluster and args.limits_timeout == 0.1


async def _tick() -> None:
    import asyncio

    for _ in range(3):
        await asyncio.sleep(0)


# --- a request's gate over the in-process limiter ----------------------------------------------


def _runtime(limits: list[dict[str, Any]], capacity: list[dict[str, Any]] | None = None, **extra: Any) -> Runtime:
    def backend(provider: str, model: str) -> dict[str, str]:
        return {"provider": provider, "model": model}

    return Runtime.build(
        parse_snapshot(
            {
                "providers": [
                    {"name": "oai", "type": "openai", "baseUrl": "https://api.openai.com/v1", "apiKey": KEY,
                     "capacity": capacity or [], "pricing": {"gpt-4o": {"inputPerMillion": 2, "outputPerMillion": 8}}},
                    {"name": "spare", "type": "openai", "baseUrl": "https://spare.example/v1"},
                ],
                "routes": [
                    {"name": "chat", "model": "chat", "rules": [{"name": "r", "backends": [backend("oai", "gpt-4o")],
                     "fallbacks": [backend("spare", "mini")]}]},
                    {"name": "free", "model": "free", "rules": [{"name": "r", "backends": [backend("spare", "mini")]}]},
                ],
                "policy": {"workload": "team-a/app", "limits": limits},
                **extra,
            }
        )
    )  # fmt: skip


def _limit(name: str, **spec: Any) -> dict[str, Any]:
    return {"policy": "ModelPolicy team-a/caps", "name": name, "key": f"ModelPolicy/team-a/caps/{name}/policy", **spec}


class _Span:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def add_event(self, name: str, attributes: dict[str, Any]) -> None:
        self.events.append((name, attributes))

    def get_span_context(self) -> SpanContext:
        return INVALID_SPAN_CONTEXT


def _admission() -> tuple[Admission, Registry]:
    registry = Registry()
    telemetry = Telemetry(metrics=SidecarMetrics(registry=registry))
    admission = Admission(telemetry=telemetry, audit=AuditLog())
    now = time.time()
    admission.slot = LimiterSlot(LimitSettings(), build=lambda _: InProcessLimiter(clock=lambda: now))  # time stands
    return admission, registry


def _gate(admission: Admission, runtime: Runtime, model: str = "chat", **body: Any) -> Gate | None:
    plan = _plan(runtime, model)
    return admission.admit(
        runtime=runtime, plan=plan, classification=Classification("internal"), operation="chat", model=model,
        api="openai", body={"model": model, "messages": [], **body}, request=make_mocked_request(
            "POST", "/v1/chat/completions", headers={"content-length": "200"}
        ),
    )  # fmt: skip


def _plan(runtime: Runtime, model: str) -> Plan:
    from proxy.request.plan import plan

    return plan(runtime, {}, model=model, data_class="internal", health=OutlierDetector())


def _outcome(backend: str | None, usage: AnswerUsage = NO_USAGE, status: int = 200) -> Outcome:
    return Outcome("chat", "chat", False, "", "internal", "chat", "r", "allow", backend, None, usage, None, (),
                   status, None, "", None, 0.0, "", {})  # fmt: skip


async def test_no_limits_no_gate_and_no_limiter_built() -> None:
    admission, _ = _admission()
    assert _gate(admission, _runtime([])) is None
    assert _gate(admission, _runtime([_limit("chat-only", requestsPerMinute=5, routes=["chat"])]), "free") is None
    assert admission.slot.current is None


async def test_a_refusal_is_an_api_error_with_headers_a_span_event_a_metric_and_an_audit_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    admission, registry = _admission()
    runtime = _runtime([_limit("rpm", requestsPerMinute=1)])
    first = _gate(admission, runtime, max_tokens=10)
    assert first is not None
    oai = runtime.snapshot.routes[0].rules[0].backends[0]
    span = _Span()
    assert await first.reserve(oai, first.counters(oai), span=span) is GO
    assert first.answer_headers() == {
        "x-ratelimit-limit-requests": "1", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m0s"
    }  # fmt: skip
    second = _gate(admission, runtime)
    assert second is not None
    with caplog.at_level(logging.INFO, logger="modelway.audit"), pytest.raises(ApiError) as refused:
        await second.reserve(oai, second.counters(oai), span=span)
    error = refused.value
    assert error.status == 429 and error.code == "rate_limit_exceeded" and error.headers["retry-after"] == "60"
    [(name, attributes)] = span.events
    assert name == "modelway.limit.refused" and attributes["modelway.limit.name"] == "rpm"
    assert attributes["modelway.limit.owner"] == "ModelPolicy team-a/caps" and attributes["modelway.limit.measure"]
    assert '"limit":"rpm"' in caplog.text and '"decision":"refuse"' in caplog.text
    assert (
        'modelway_limits_refusals_total{modelway_route="chat",modelway_limit_owner="ModelPolicy team-a/caps",'
        'modelway_limit_name="rpm",modelway_limit_measure="requests"} 1'
    ) in render_prometheus(registry)


async def test_spent_capacity_skips_the_backend_and_the_rerouted_budget_names_the_cheaper_one() -> None:
    admission, registry = _admission()
    capacity = [{"key": "ModelProvider/a/oai/capacity/gpt-4o", "model": "gpt-4o", "requestsPerMinute": 1}]
    runtime = _runtime([], capacity)
    oai = runtime.snapshot.routes[0].rules[0].backends[0]
    for expected in (GO, SKIP):
        gate = _gate(admission, runtime)
        assert gate is not None and await gate.reserve(oai, gate.counters(oai), span=_Span()) is expected
    skips = 'modelway_limits_capacity_skips_total{modelway_route="chat",modelway_backend="oai/gpt-4o"} 1'
    assert skips in render_prometheus(registry)
    refusal = gate.capacity_refusal(_Span())  # type: ignore[arg-type]
    assert refusal is not None and refusal.status == 429

    cheaper = [{"provider": "spare", "model": "mini"}]
    runtime = _runtime([_limit("daily", usdPerDay=0.000001, onBudgetSpent="reroute", rerouteTo=cheaper)])
    gate = _gate(admission, runtime, max_tokens=10)
    assert gate is not None and await gate.reserve(oai, gate.counters(oai), span=_Span()) is GO
    gate = _gate(admission, runtime, max_tokens=10)
    assert gate is not None
    targets = await gate.reserve(oai, gate.counters(oai), span=_Span())
    assert isinstance(targets, tuple) and [c.backend.key for c in targets] == ["spare/mini"]
    assert gate.counters(targets[0].backend) == ()  # the budget that rerouted it no longer counts it


async def test_settlement_charges_the_answer_returns_the_rest_and_frees_the_lease() -> None:
    admission, _ = _admission()
    runtime = _runtime([_limit("caps", tokensPerMinute=100_000, concurrentRequests=1)])
    oai = runtime.snapshot.routes[0].rules[0].backends[0]
    gate = _gate(admission, runtime, max_tokens=1000)
    assert gate is not None and await gate.reserve(oai, gate.counters(oai), span=_Span()) is GO
    limiter = admission.slot.current.limiter  # type: ignore[union-attr]
    assert isinstance(limiter, InProcessLimiter)
    tokens, concurrency = gate.counters(oai)[0], gate.counters(oai)[-1]
    assert limiter.standing(tokens)["inUse"] == pytest.approx(1100, abs=1)  # 200 bytes / 2 + 1000
    assert limiter.standing(concurrency)["inFlight"] == 1
    gate.settle(_outcome("oai/gpt-4o", AnswerUsage(12, 34)))
    await admission.settled()
    assert limiter.standing(tokens)["inUse"] == pytest.approx(46, abs=1)
    assert limiter.standing(concurrency)["inFlight"] == 0

    gate = _gate(admission, runtime, max_tokens=1000)
    assert gate is not None and await gate.reserve(oai, gate.counters(oai), span=_Span()) is GO
    gate.settle(_outcome(None, status=CLIENT_CLOSED))  # the client left while the call was under way
    await admission.settled()
    assert limiter.standing(tokens)["inUse"] == pytest.approx(46 + 1100, abs=2)  # the estimate stays charged
    assert limiter.standing(concurrency)["inFlight"] == 0


def test_the_runtime_scrubs_the_limit_stores_password_and_the_status_never_shows_the_url() -> None:
    url = f"redis://:{STORE_PASSWORD}@redis.example:6379/0"
    runtime = _runtime([_limit("rpm", requestsPerMinute=1)], limitStore={"url": url})
    assert STORE_PASSWORD not in runtime.scrubber(f"Error connecting to {url}: auth {STORE_PASSWORD} failed")
    admission, _ = _admission()
    assert STORE_PASSWORD not in str(admission.status(runtime)) and "redis.example" not in str(
        admission.status(runtime)
    )
