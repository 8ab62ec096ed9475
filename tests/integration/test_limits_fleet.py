"""Limits exact across a fleet: several real sidecar processes on one snapshot file, their counters in
one real Redis (`--limits-redis-url`), many concurrent apps on the official SDKs, and the fake providers'
records as the judge of what was admitted.

test_limits_bound.py proves the bound on the limiter alone (processes, no sidecar); here the same
promises are checked through the whole request path:

- tokens per minute: what the providers served stays within the limit plus the refill of the run and
  one request's reservation (the bound `proxy.limits.algorithm` documents: every check-and-reserve is
  one atomic script, the reservation covers the real usage, so only a request bigger than the limit or
  an under-estimate could overshoot), for plain and streamed calls; and refunds are real (the limit is
  filled to within what the requests in flight could still give back);
- a budget (USD per day, priced by the provider) stops spending within one request of its line;
- a provider's capacity sends the excess to the route's next backend, so the app never sees a 429
  and the first provider never gets more than its quota;
- Redis killed or hung while apps are calling: failureMode open serves throughout, closed answers 503
  `limits_unavailable`, each within the store's timeout; once Redis is back, counting resumes;
- the store the snapshot names (`limitStore`, as the controller sends it) is shared without any flag.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from proxy.limits.algorithm import windows_for
from proxy.limits.model import Demand
from tests.fakes.process import FakeProviderProcess
from tests.harness.redis import RedisServer, RestartableRedis
from tests.integration.fleet import PRICES, Fleet, pricing, provider, route, served, served_micro_usd, served_tokens

pytestmark = pytest.mark.timeout(90)

SIDECARS, CLIENTS = 3, 8  # clients per sidecar
POLICY = "ModelPolicy team-a/caps"
PROMPT = " ".join(["w"] * 100)  # 100 tokens to the fakes (they count words), about 200 bytes
CHAT = "claude-sonnet-4-5"
# A store that does not answer is given this long (the sidecar's default); what a request may take
# beyond it on this shared, loaded machine is the slack.
STORE_TIMEOUT, SLACK = 0.1, 0.9
# The tests of exactness give the store time to answer: on a loaded machine a check can miss 100 ms,
# and a check that times out is decided by the failure mode, uncounted (what the outage test proves).
PATIENT = ["--limits-timeout", "2"]


def limit(name: str, **numbers: Any) -> dict[str, Any]:
    """A limit of one policy for the whole subject set, its key unique to the test (Redis is shared)."""
    return {"policy": POLICY, "name": name, "key": f"ModelPolicy/team-a/caps/{name}/policy/{uuid.uuid4().hex}",
            **numbers}  # fmt: skip


def reservation(body: dict[str, Any], max_tokens: int) -> int:
    """At most what one request reserves: its JSON body at 2 bytes a token (the SDK's serialisation
    may add spaces: 64 bytes of room), plus the output it asks for (`proxy.limits.estimate`)."""
    return math.ceil((len(json.dumps(body)) + 64) / 2) + max_tokens


@dataclass
class Tally:
    admitted: int = 0
    refused: int = 0
    reported_tokens: int = 0  # what the answers told the apps they used
    refusal: Any = None  # the last refusal's HTTP response
    codes: set[str | None] = field(default_factory=set)
    first_refused_at: float = 0.0  # monotonic


Call = Callable[[], Awaitable[int]]


async def attempt(call: Call, tally: Tally) -> bool:
    """One call: True if admitted; a 429 is counted; anything else fails the test."""
    try:
        tally.reported_tokens += await call()
    except (openai.RateLimitError, anthropic.RateLimitError) as exc:
        tally.first_refused_at = tally.first_refused_at or time.monotonic()
        tally.refused += 1
        tally.refusal = exc.response
        tally.codes.add(_code(exc.body))
        return False
    tally.admitted += 1
    return True


async def hammer(call: Call, tally: Tally, *, until: float, tallies: list[Tally]) -> None:
    """Calls until a second after any of `tallies` was first refused (or `until`, monotonic), waiting a
    little after each refusal: the limit is reached, then held against a second of calls."""
    while time.monotonic() < until:
        if not await attempt(call, tally):
            await asyncio.sleep(0.1)
        refused_at = min((t.first_refused_at for t in tallies if t.refused), default=until)
        until = min(until, refused_at + 1.0)


def _code(body: object) -> str | None:
    error = body.get("error", body) if isinstance(body, dict) else None
    return error.get("code") or error.get("type") if isinstance(error, dict) else None


def openai_client(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="placeholder", max_retries=0, timeout=30)


def openai_call(client: openai.AsyncOpenAI, model: str, *, stream: bool, max_tokens: int) -> Call:
    messages: Any = [{"role": "user", "content": PROMPT}]

    async def plain() -> int:
        answer = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)
        assert answer.usage is not None
        return answer.usage.total_tokens

    async def streamed() -> int:
        used = 0
        chunks = await client.chat.completions.create(
            model=model, messages=messages, max_tokens=max_tokens, stream=True, stream_options={"include_usage": True}
        )
        async for chunk in chunks:
            if chunk.usage is not None:
                used = chunk.usage.total_tokens
        return used

    return streamed if stream else plain


def anthropic_call(client: anthropic.AsyncAnthropic, model: str, *, max_tokens: int) -> Call:
    async def streamed() -> int:
        started = final_input = output = 0
        events = await client.messages.create(
            model=model, max_tokens=max_tokens, messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        async for event in events:
            if event.type == "message_start":
                started = event.message.usage.input_tokens
            elif event.type == "message_delta":  # the final counts (input too, as the API now sends it)
                final_input, output = event.usage.input_tokens or 0, event.usage.output_tokens
        return (final_input or started) + output

    return streamed


# --- tokens per minute ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("api", "stream"), [("openai", False), ("openai", True), ("anthropic", True)])
async def test_admitted_tokens_stay_within_one_limit_across_sidecars(
    redis: RedisServer, fake_openai: FakeProviderProcess, fake_anthropic: FakeProviderProcess, tmp_path: Path,
    api: str, stream: bool,
) -> None:  # fmt: skip
    tpm, max_tokens = 10_000, 20  # about 120 tokens a call: the limit is some 85 calls
    fake = fake_openai if api == "openai" else fake_anthropic
    kind = "openai" if api == "openai" else "anthropic"
    snapshot = {
        "providers": [provider("team-a.llm", kind, fake)],
        "routes": [route("tpm", "team-a.llm", "gpt-4o" if api == "openai" else CHAT)],
        "policy": {"limits": [limit("tpm", tokensPerMinute=tpm)]},
    }
    body = {"model": "tpm", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
            "stream": stream, "stream_options": {"include_usage": True}}  # fmt: skip
    reserved = reservation(body, max_tokens)
    tallies = [Tally() for _ in range(SIDECARS * CLIENTS)]
    with Fleet(snapshot, tmp_path, count=SIDECARS, extra_args=["--limits-redis-url", redis.url, *PATIENT]) as fleet:
        calls: list[Call] = []
        for sidecar in fleet.sidecars:
            if api == "openai":
                client = openai_client(sidecar.base_url)
                calls += [openai_call(client, "tpm", stream=stream, max_tokens=max_tokens)] * CLIENTS
            else:
                claude = anthropic.AsyncAnthropic(base_url=sidecar.base_url, api_key="placeholder", max_retries=0)
                calls += [anthropic_call(claude, "tpm", max_tokens=max_tokens)] * CLIENTS
        began = time.monotonic()
        apps = (hammer(c, t, until=began + 30, tallies=tallies) for c, t in zip(calls, tallies, strict=True))
        await asyncio.gather(*apps)
        elapsed = time.monotonic() - began
        uncounted = fleet.metric("modelway_limits_store_unavailable_total")

    answers = served(fake)
    admitted, refused = sum(t.admitted for t in tallies), sum(t.refused for t in tallies)
    tokens = served_tokens(fake)
    refill = tpm * elapsed / 60
    print(f"{api} {'stream' if stream else 'plain'}: {SIDECARS} sidecars x {CLIENTS} clients, {elapsed:.1f} s: "
          f"served {tokens} tokens in {len(answers)} calls ({refused} refusals); limit {tpm} + refill {refill:.0f}, "
          f"reservation {reserved}, overshoot {max(tokens - tpm - refill, 0):.0f}")  # fmt: skip
    assert refused > 0, "the limit was never reached: the test proves nothing"
    assert uncounted == 0, "a check missed the store's timeout (a very loaded machine): its call went uncounted"
    assert len(answers) == admitted  # every call the providers served reached its app, none was refused late
    assert sum(t.reported_tokens for t in tallies) == tokens  # the apps were told what the providers counted
    assert tokens <= tpm + refill + reserved  # the bound
    # Refunds are real. At the last refusal the counter was within one reservation of the limit, and the
    # calls then in flight gave back at most (reservation - usage) each; charged whole reservations with
    # nothing given back, the calls could not have used more than `unrefunded`.
    per_call = min(i + o for i, o in answers)
    in_flight = SIDECARS * CLIENTS - 1
    unrefunded = (tpm + refill + reserved) * per_call / reserved
    assert tokens > tpm - reserved - in_flight * (reserved - per_call)
    assert tokens > unrefunded
    refusal = next(t.refusal for t in tallies if t.refusal is not None)
    assert {c for t in tallies for c in t.codes} == {"rate_limit_exceeded" if api == "openai" else "rate_limit_error"}
    assert refusal.headers.get("retry-after") and refusal.headers.get("retry-after-ms")
    header = "x-ratelimit-limit-tokens" if api == "openai" else "anthropic-ratelimit-tokens-limit"
    assert refusal.headers.get(header) == str(tpm)


def test_a_stream_the_provider_cuts_is_charged_its_reservation(
    redis: RedisServer, fake_openai: FakeProviderProcess, tmp_path: Path
) -> None:
    """A cut stream reports no usage: it is charged what it reserved, so cut streams cannot overshoot.
    What the counter holds is read as the app reads it: `x-ratelimit-remaining-tokens` on each answer."""
    tpm, cut = 2_000, 5
    snapshot = {
        "providers": [provider("team-a.oai", "openai", fake_openai)],
        "routes": [route("cut", "team-a.oai", "gpt-4o")],
        "policy": {"limits": [limit("tpm", tokensPerMinute=tpm)]},
    }
    fake_openai.script([{"cut_after_chunks": 3}] * cut)
    with Fleet(snapshot, tmp_path, count=2, extra_args=["--limits-redis-url", redis.url, *PATIENT]) as fleet:
        clients = [openai.OpenAI(base_url=s.base_url + "/v1", api_key="p", max_retries=0) for s in fleet.sidecars]
        began = time.monotonic()
        outcomes, remaining = [], []
        for n in range(cut + 1):
            raw = clients[n % 2].chat.completions.with_raw_response.create(
                model="cut", messages=[{"role": "user", "content": PROMPT}], max_tokens=20, stream=True,
                stream_options={"include_usage": True},
            )  # fmt: skip
            remaining.append(int(raw.headers["x-ratelimit-remaining-tokens"]))
            try:
                outcomes.append("whole" if any(c.usage for c in raw.parse()) else "cut")
            except openai.APIError:
                outcomes.append("cut")
            time.sleep(0.3)  # every settlement lands before the next check
        refill = tpm * (time.monotonic() - began) / 60
    reserved = tpm - remaining[0]  # what the first call took of the full limit
    print(f"cut streams: {outcomes}; remaining {remaining}; each reserved {reserved}; refill {refill:.0f}")
    assert outcomes == ["cut"] * cut + ["whole"]
    # The last call found every cut stream still charged its reservation (less the refill since); charged
    # nothing, they would have left it about `tpm - reserved`.
    assert remaining[-1] <= tpm - (cut + 1) * reserved + refill + 1


# --- budget ----------------------------------------------------------------------------------------------


async def test_a_budget_stops_spending_within_one_request_of_its_line_across_sidecars(
    redis: RedisServer, fake_openai: FakeProviderProcess, tmp_path: Path
) -> None:
    micro_usd, max_tokens, clients = 30_000, 50, 4  # three cents: about 40 calls of 750 micro-USD
    budget = limit("daily", usdPerDay=micro_usd / 1e6, failureMode="closed")  # as compiled by default
    snapshot = {
        "providers": [provider("team-a.oai", "openai", fake_openai, pricing=pricing())],
        "routes": [route("budget", "team-a.oai", "gpt-4o")],
        "policy": {"limits": [budget]},
    }
    body = {"model": "budget", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens}
    price_in, price_out = PRICES["gpt-4o"]
    reserved = Demand(reservation(body, max_tokens) - max_tokens, max_tokens, price_in, price_out).micro_usd()
    key = f"{{modelway}}:{budget['key']}/usd_day/{windows_for(['usd_day'], time.time())[0][0]}"

    async def spend(call: Call, tally: Tally) -> None:
        while await attempt(call, tally):  # until the budget refuses one
            pass

    with Fleet(snapshot, tmp_path, count=SIDECARS, extra_args=["--limits-redis-url", redis.url, *PATIENT]) as fleet:
        sidecar_clients = [openai_client(s.base_url) for s in fleet.sidecars]
        calls = [
            openai_call(c, "budget", stream=False, max_tokens=max_tokens)
            for c in sidecar_clients
            for _ in range(clients)
        ]
        tallies = [Tally() for _ in calls]
        await asyncio.wait_for(asyncio.gather(*(spend(c, t) for c, t in zip(calls, tallies, strict=True))), 60)
        spent = served_micro_usd(fake_openai, "gpt-4o")
        deadline = time.monotonic() + 5  # every settlement has landed: the counter holds what was served
        while int(redis.cli("GET", key) or 0) != spent and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        charged = int(redis.cli("GET", key) or 0)
        last = [Tally() for _ in sidecar_clients]  # with nothing in flight, no sidecar lets one more through
        for client, tally in zip(sidecar_clients, last, strict=True):
            await attempt(openai_call(client, "budget", stream=False, max_tokens=max_tokens), tally)

    print(f"budget: spent {spent} of {micro_usd} micro-USD in {len(served(fake_openai))} calls "
          f"across {SIDECARS} sidecars; one call reserves {reserved}")  # fmt: skip
    assert {c for t in tallies for c in t.codes} == {"insufficient_quota"}
    assert charged == spent  # the shared counter is what the provider served, priced
    assert spent <= micro_usd  # never past the line
    assert all(t.refused == 1 and t.admitted == 0 for t in last), "a sidecar spent past the line"
    assert spent > micro_usd - reserved  # and stopped within one request of it
    refusal = next(t.refusal for t in tallies if t.refusal is not None)
    assert refusal.headers.get("x-should-retry") == "false"  # the SDKs do not retry a spent budget


# --- capacity ------------------------------------------------------------------------------------------


async def test_a_providers_capacity_sends_the_excess_to_the_next_backend_before_any_429(
    redis: RedisServer, fake_openai: FakeProviderProcess, fake_anthropic: FakeProviderProcess, tmp_path: Path
) -> None:
    quota, per_client = 12, 5  # requests a minute the first provider's account allows; calls per app
    capacity = {"key": f"ModelProvider/team-a/oai/capacity/{uuid.uuid4().hex}", "model": "gpt-*",
                "requestsPerMinute": quota}  # fmt: skip
    snapshot = {
        "providers": [
            provider("team-a.oai", "openai", fake_openai, capacity=[capacity]),
            provider("team-a.claude", "anthropic", fake_anthropic),
        ],
        "routes": [route("spill", "team-a.oai", "gpt-4o", fallback=("team-a.claude", CHAT))],
    }
    with Fleet(snapshot, tmp_path, count=SIDECARS, extra_args=["--limits-redis-url", redis.url, *PATIENT]) as fleet:
        clients = [openai_client(s.base_url) for s in fleet.sidecars]
        calls = [openai_call(c, "spill", stream=n % 2 == 1, max_tokens=20) for c in clients for n in range(4)]

        async def app(call: Call) -> None:
            for _ in range(per_client):
                await call()  # max_retries=0: any 429 or error fails the test

        began = time.monotonic()
        await asyncio.gather(*(app(c) for c in calls))
        elapsed = time.monotonic() - began
        skips = fleet.metric("modelway_limits_capacity_skips_total")

    total, first, second = len(calls) * per_client, len(served(fake_openai)), len(served(fake_anthropic))
    print(f"capacity: {total} calls, {first} to the first provider (quota {quota}/min), {second} to the next "
          f"in {elapsed:.1f} s; capacity skips counted {skips:.0f}")  # fmt: skip
    assert first + second == total
    assert quota <= first <= quota + math.floor(quota * elapsed / 60)  # never past its quota, but used
    assert skips == second


# --- Redis killed or hung mid-run --------------------------------------------------------------------------


def answer_status(client: openai.OpenAI, model: str) -> tuple[int, str | None, float]:
    """(status, error code, seconds taken) of one plain call."""
    began = time.monotonic()
    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=5)
        return 200, None, time.monotonic() - began
    except openai.APIStatusError as exc:
        return exc.status_code, _code(exc.body), time.monotonic() - began


@pytest.fixture
def outage_fleet(own_redis: RestartableRedis, fake_openai: FakeProviderProcess, tmp_path: Path) -> Iterator[Fleet]:
    snapshot = {
        "providers": [provider("team-a.oai", "openai", fake_openai, pricing=pricing())],
        "routes": [route(name, "team-a.oai", "gpt-4o") for name in ("open", "closed", "resumed")],
        "policy": {
            "limits": [
                limit("rate", routes=["open"], requestsPerMinute=100_000, failureMode="open"),
                limit("spend", routes=["closed"], usdPerDay=100, failureMode="closed"),
                limit("after", routes=["resumed"], requestsPerMinute=3, failureMode="open"),
            ]
        },
    }
    with Fleet(snapshot, tmp_path, count=2, extra_args=["--limits-redis-url", own_redis.url]) as fleet:
        yield fleet


@dataclass(frozen=True)
class Answered:
    route: str
    sent_at: float  # monotonic
    status: int
    code: str | None
    took: float


def traffic(client: openai.OpenAI, stop: threading.Event) -> list[Answered]:
    """Calls on the open and the closed route in turn until `stop`."""
    out = []
    while not stop.is_set():
        for route_name in ("open", "closed"):
            sent_at = time.monotonic()
            status, code, took = answer_status(client, route_name)
            out.append(Answered(route_name, sent_at, status, code, took))
    return out


@pytest.mark.parametrize("outage", ["killed", "hung"])
def test_redis_lost_mid_run_follows_failure_mode_and_counting_resumes(
    own_redis: RestartableRedis, outage_fleet: Fleet, outage: str
) -> None:
    clients = [openai.OpenAI(base_url=s.base_url + "/v1", api_key="p", max_retries=0, timeout=20)
               for s in outage_fleet.sidecars]  # fmt: skip
    stop = threading.Event()
    with ThreadPoolExecutor(2 * len(clients)) as pool:  # two apps per sidecar, calling all along
        apps = [pool.submit(traffic, client, stop) for client in clients * 2]
        time.sleep(1.0)
        lost_at = time.monotonic()
        own_redis.kill() if outage == "killed" else own_redis.signal(signal.SIGSTOP)
        time.sleep(2.0)
        stop.set()
        answers = [a for app in apps for a in app.result()]

    before = [a for a in answers if a.sent_at + a.took < lost_at]
    after = [a for a in answers if a.sent_at > lost_at]
    slowest = max(a.took for a in answers)
    print(f"{outage}: {len(answers)} calls, {len(after)} sent while Redis was away; slowest {slowest * 1000:.0f} ms")
    assert before and all(a.status == 200 for a in before)
    assert {(a.status, a.code) for a in answers if a.route == "open"} == {(200, None)}  # open: served throughout
    assert {(a.status, a.code) for a in after if a.route == "closed"} == {(503, "limits_unavailable")}  # closed
    assert {(a.status, a.code) for a in answers if a.route == "closed"} <= {(200, None), (503, "limits_unavailable")}
    assert len([a for a in after if a.route == "open"]) >= 4
    assert slowest < STORE_TIMEOUT + SLACK  # never a hang, in flight when Redis went or after
    unavailable = outage_fleet.metric("modelway_limits_store_unavailable_total", modelway_limit_failure_mode="closed")
    assert unavailable >= len([a for a in after if a.route == "closed"])
    assert outage_fleet.metric("modelway_limits_store_unavailable_total", modelway_limit_failure_mode="open") >= 4

    own_redis.start() if outage == "killed" else own_redis.signal(signal.SIGCONT)
    for client in clients:  # each sidecar reaches the store again (a closed limit answers only then)
        deadline = time.monotonic() + 15
        while answer_status(client, "closed")[0] != 200:
            assert time.monotonic() < deadline, f"a sidecar never reached Redis again:\n{outage_fleet.logs()}"
            time.sleep(0.1)
    # Counted again, across the sidecars: three of "after"'s limit of 3 a minute, then a refusal.
    results = [answer_status(clients[n % 2], "resumed")[:2] for n in range(4)]
    assert results == [(200, None)] * 3 + [(429, "rate_limit_exceeded")]


# --- the store named by the snapshot ---------------------------------------------------------------------


def test_the_store_the_snapshot_names_is_shared_without_any_flag(
    redis: RedisServer, fake_openai: FakeProviderProcess, tmp_path: Path
) -> None:
    snapshot = {
        "providers": [provider("team-a.oai", "openai", fake_openai)],
        "routes": [route("shared", "team-a.oai", "gpt-4o")],
        "policy": {"limits": [limit("rpm", requestsPerMinute=3)]},
        "limitStore": {"url": redis.url},
    }
    with Fleet(snapshot, tmp_path, count=2, extra_args=[]) as fleet:
        clients = [openai.OpenAI(base_url=s.base_url + "/v1", api_key="p", max_retries=0) for s in fleet.sidecars]
        results = [answer_status(clients[n % 2], "shared")[:2] for n in range(4)]
        logs = fleet.logs()
    assert results == [(200, None)] * 3 + [(429, "rate_limit_exceeded")]  # one count, not one per sidecar
    assert redis.url not in logs  # the URL may carry a password: never logged
