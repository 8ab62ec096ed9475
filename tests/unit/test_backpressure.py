"""The in-flight bounds' logic without sockets: counts, the FIFO queue and its deadline, fair
hand-over, and that every way out (release, expiry, cancellation) gives back what it took."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from proxy.errors import ApiError
from proxy.frontends.anthropic_messages import AnthropicFrontend
from proxy.frontends.openai_chat import OpenAIFrontend
from proxy.request.backpressure import (
    BACKEND,
    OVERLOADED,
    ROUTE,
    Backpressure,
    BackpressureSettings,
    Bound,
    Full,
    Slots,
    Unbounded,
)
from proxy.request.relay import AttemptFailed
from proxy.telemetry.sidecar_metrics import NoMetrics
from proxy.upstream import Failure


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def settle() -> None:
    """Lets every ready task run (a hand-over resumes its waiter on a later loop turn)."""
    for _ in range(5):
        await asyncio.sleep(0)


def in_flight(bound: Bound, key: str = "k") -> int:
    return dict(bound.in_flight()).get(key, 0)


def test_under_the_bound_every_request_gets_a_slot_at_once_and_gives_it_back() -> None:
    bound = Bound(limit=2, max_queued=1, queue_wait=1)
    first, second = bound.enter("k"), bound.enter("k")
    assert first is not None and second is not None
    assert bound.enter("k") is None  # the third must wait
    assert bound.enter("other") is not None  # keys are counted apart
    bound.leave(first)
    assert in_flight(bound) == 1
    assert bound.enter("k") is not None


def test_waiters_get_freed_slots_in_the_order_they_came() -> None:
    async def scenario() -> list[str]:
        bound = Bound(limit=1, max_queued=3, queue_wait=5)
        held = bound.enter("k")
        assert held is not None
        served: list[str] = []

        async def request(name: str) -> None:
            slots = await bound.wait("k")
            served.append(name)
            await asyncio.sleep(0.01)
            bound.leave(slots)

        tasks = []
        for name in ("a", "b", "c"):
            tasks.append(asyncio.create_task(request(name)))
            await asyncio.sleep(0)  # queued in this order
        assert bound.queued("k") == 3
        bound.leave(held)
        await asyncio.gather(*tasks)
        assert in_flight(bound) == 0 and bound.queued("k") == 0
        return served

    assert run(scenario()) == ["a", "b", "c"]


def test_a_newcomer_does_not_overtake_the_queue() -> None:
    async def scenario() -> None:
        bound = Bound(limit=1, max_queued=1, queue_wait=5)
        held = bound.enter("k")
        assert held is not None
        waiting = asyncio.create_task(bound.wait("k"))
        await settle()
        bound.leave(held)  # the slot passes to the waiter, which has not resumed yet
        assert bound.enter("k") is None
        slots = await waiting
        assert in_flight(bound) == 1
        bound.leave(slots)
        assert in_flight(bound) == 0

    run(scenario())


def test_a_full_queue_refuses_at_once() -> None:
    async def scenario() -> None:
        bound = Bound(limit=1, max_queued=1, queue_wait=5)
        bound.enter("k")
        waiting = asyncio.create_task(bound.wait("k"))
        await settle()
        with pytest.raises(Full) as caught:
            await bound.wait("k")
        assert caught.value.waited is None and caught.value.limit == 1 and caught.value.queued == 1
        waiting.cancel()

    run(scenario())


def test_a_waiter_past_its_wait_is_refused_and_leaves_the_queue() -> None:
    async def scenario() -> None:
        bound = Bound(limit=1, max_queued=2, queue_wait=0.05)
        held = bound.enter("k")
        assert held is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Full) as caught:
            await bound.wait("k")
        assert caught.value.waited is not None and caught.value.waited >= 0.04
        assert loop.time() - started < 1
        assert bound.queued("k") == 0 and in_flight(bound) == 1
        bound.leave(held)
        assert in_flight(bound) == 0  # the slot went to the count, not to the one that left

    run(scenario())


def test_the_callers_deadline_cuts_the_wait_short() -> None:
    async def scenario() -> None:
        bound = Bound(limit=1, max_queued=1, queue_wait=10)
        bound.enter("k")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Full):
            await bound.wait("k", deadline=started + 0.05)
        assert loop.time() - started < 1

    run(scenario())


def test_a_waiter_cancelled_in_the_queue_takes_no_slot() -> None:
    async def scenario() -> None:
        bound = Bound(limit=1, max_queued=2, queue_wait=5)
        held = bound.enter("k")
        assert held is not None
        gone = asyncio.create_task(bound.wait("k"))
        await settle()
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert bound.queued("k") == 0
        bound.leave(held)
        assert in_flight(bound) == 0
        assert bound.enter("k") is not None  # the next request gets through

    run(scenario())


def test_a_waiter_cancelled_just_as_a_slot_passed_to_it_passes_the_slot_on() -> None:
    async def scenario() -> None:
        bound = Bound(limit=1, max_queued=2, queue_wait=5)
        held = bound.enter("k")
        assert held is not None
        first = asyncio.create_task(bound.wait("k"))
        await settle()
        second = asyncio.create_task(bound.wait("k"))
        await settle()
        bound.leave(held)  # hands the slot to `first`...
        first.cancel()  # ...which is cancelled before it could resume
        with pytest.raises(asyncio.CancelledError):
            await first
        slots = await asyncio.wait_for(second, 1)  # the slot went on to the next in line
        assert in_flight(bound) == 1
        bound.leave(slots)
        assert in_flight(bound) == 0

    run(scenario())


def test_no_slot_is_lost_or_invented_whatever_the_requests_do() -> None:
    """Many requests entering, waiting, timing out, being cancelled at random moments, holding
    their slot for random times: the count never passes the limit and ends at zero."""

    async def scenario(seed: int) -> None:
        rng = random.Random(seed)
        bound = Bound(limit=3, max_queued=4, queue_wait=0.02)
        peak = 0

        async def request() -> None:
            nonlocal peak
            slots = bound.enter("k")
            if slots is None:
                try:
                    slots = await bound.wait("k")
                except Full:
                    return
            try:
                peak = max(peak, in_flight(bound))
                await asyncio.sleep(rng.random() * 0.01)
            finally:
                bound.leave(slots)

        tasks = [asyncio.create_task(request()) for _ in range(200)]
        for _ in range(60):
            await asyncio.sleep(rng.random() * 0.002)
            rng.choice(tasks).cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert peak == 3
        assert in_flight(bound) == 0 and bound.queued("k") == 0

    for seed in range(5):
        run(scenario(seed))


def test_idle_keys_are_forgotten_when_there_are_too_many_but_held_ones_are_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("proxy.request.backpressure.MAX_KEYS", 3)
    bound = Bound(limit=1, max_queued=0, queue_wait=0)
    held = bound.enter("held")
    for key in ("a", "b", "c", "d"):
        slots = bound.enter(key)
        assert slots is not None
        bound.leave(slots)
    assert "held" in dict(bound.in_flight()) and len(bound.in_flight()) <= 3
    assert held is not None
    bound.leave(held)
    assert in_flight(bound, "held") == 0


def test_a_bound_turned_off_counts_nothing() -> None:
    off = Unbounded()
    gates = [off.enter("k") for _ in range(10_000)]
    assert all(isinstance(g, Slots) for g in gates)
    assert off.in_flight() == []


class Recorded(NoMetrics):
    def __init__(self) -> None:
        self.refusals: list[tuple[str, str]] = []

    def backpressure_refusal(self, *, route: str, scope: str) -> None:
        self.refusals.append((route, scope))


def test_a_full_route_is_a_503_naming_it_and_its_bound_with_retry_after() -> None:
    async def scenario() -> None:
        metrics = Recorded()
        pressure = Backpressure(
            BackpressureSettings(max_in_flight_per_route=2, max_queued=0, queue_wait_seconds=1.5), metrics=metrics
        )
        assert pressure.route.enter("chat") and pressure.route.enter("chat")
        with pytest.raises(ApiError) as caught:
            await pressure.wait_route("chat")
        error = caught.value
        assert error.status == 503 and error.code == OVERLOADED
        assert error.headers == {"retry-after": "2"}
        assert "route 'chat'" in error.message and "bound of 2 requests in flight" in error.message
        assert metrics.refusals == [("chat", ROUTE)]

    run(scenario())


def test_a_full_backend_fails_the_attempt_so_the_next_backend_is_tried() -> None:
    async def scenario() -> None:
        pressure = Backpressure(BackpressureSettings(max_in_flight_per_backend=1, max_queued=0))
        assert pressure.backend.enter("oai/gpt-4o")
        with pytest.raises(AttemptFailed) as caught:
            await pressure.wait_backend("oai/gpt-4o", deadline=asyncio.get_running_loop().time() + 5)
        failure = caught.value.failure
        assert failure.kind == OVERLOADED and failure.backend == "oai/gpt-4o"
        assert "backend oai/gpt-4o is at its bound of 1" in failure.message

    run(scenario())


def test_the_request_is_refused_for_its_backends_only_when_every_one_was_full() -> None:
    metrics = Recorded()
    pressure = Backpressure(BackpressureSettings(), metrics=metrics)
    full = [Failure(OVERLOADED, "a/m", "backend a/m is full"), Failure(OVERLOADED, "b/m", "backend b/m is full")]
    error = pressure.backends_full(route="r", model="m", failures=full)
    assert error is not None and error.status == 503 and error.code == OVERLOADED
    assert "a/m is full" in error.message and "b/m is full" in error.message
    assert metrics.refusals == [("r", BACKEND)]
    mixed = [full[0], Failure("5xx", "b/m", "boom", status=500)]
    assert pressure.backends_full(route="r", model="m", failures=mixed) is None
    assert pressure.backends_full(route="r", model="m", failures=[]) is None


def test_the_refusal_in_each_api_shape() -> None:
    error = ApiError(503, "route 'r' is full", "server_error", OVERLOADED, headers={"retry-after": "2"})
    assert OpenAIFrontend().error_body(error)["error"] == {
        "message": "route 'r' is full",
        "type": "server_error",
        "param": None,
        "code": "overloaded",
    }
    body = AnthropicFrontend().error_body(error)
    assert body == {"type": "error", "error": {"type": "overloaded_error", "message": "route 'r' is full"}}


@pytest.mark.parametrize(
    "settings",
    [
        {"max_in_flight_per_backend": -1},
        {"max_queued": -1},
        {"queue_wait_seconds": -0.5},
        {"queue_wait_seconds": float("nan")},
        {"queue_wait_seconds": float("inf")},
    ],
)
def test_settings_that_make_no_sense_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BackpressureSettings(**settings)


def test_zero_turns_a_bound_off() -> None:
    pressure = Backpressure(BackpressureSettings(max_in_flight_per_backend=0, max_in_flight_per_route=0))
    assert isinstance(pressure.route, Unbounded) and isinstance(pressure.backend, Unbounded)


def test_under_the_bound_a_request_allocates_nothing_here() -> None:
    import tracemalloc

    from proxy.request import backpressure

    pressure = Backpressure(BackpressureSettings())
    route, backend = pressure.route, pressure.backend

    def request() -> None:
        route_slot, backend_slot = route.enter("chat"), backend.enter("oai/gpt-4o")
        assert route_slot is not None and backend_slot is not None
        backend.leave(backend_slot)
        route.leave(route_slot)

    request()  # each key's state is made once, on its first request
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(1000):
            request()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    here = [tracemalloc.Filter(True, backpressure.__file__)]
    grown = after.filter_traces(here).compare_to(before.filter_traces(here), "lineno")
    assert sum(stat.size_diff for stat in grown) == 0 and sum(stat.count_diff for stat in grown) == 0
