"""proxy.providers.checks and the metrics it protects: bad values from a provider's answer are
refused at the edge, and if one got through, a metric would drop it instead of breaking."""

from __future__ import annotations

import math
from typing import Any

import pytest

from proxy import upstream as up
from proxy.providers import checks
from proxy.providers.base import UpstreamProtocolError
from proxy.telemetry.backends import BackendInfo
from proxy.telemetry.metrics import Registry, render_prometheus
from proxy.telemetry.sidecar_metrics import SidecarMetrics


@pytest.mark.parametrize("value", ["11", 1.0, -1, True, 2**31, [1], {"n": 1}])
def test_token_counts_must_be_ints_in_range(value: Any) -> None:
    with pytest.raises(UpstreamProtocolError, match="not a token count"):
        checks.count(value, "usage.prompt_tokens")


@pytest.mark.parametrize("value", [None, 0, 7, 2**31 - 1])
def test_token_counts_in_range_pass(value: Any) -> None:
    assert checks.count(value, "x") == value


@pytest.mark.parametrize("value", [5, ["m"], "m" * 513, {"a": 1}])
def test_names_are_bounded_strings(value: Any) -> None:
    with pytest.raises(UpstreamProtocolError, match="at most 512"):
        checks.name(value, "model")


def test_chunk_checks_return_the_usage_and_refuse_odd_shapes() -> None:
    chunk = {
        "id": "c",
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    assert checks.check_chunk(chunk) == (3, 2)
    for odd in (
        {"choices": [5]},
        {"choices": [{"delta": "x"}]},
        {"choices": [{"delta": {"tool_calls": 1}}]},
        {"choices": [{"delta": {"tool_calls": [{"function": {"arguments": 5}}]}}]},
        {"choices": [], "usage": {"prompt_tokens": "3"}},
        {"choices": None},
    ):
        with pytest.raises(UpstreamProtocolError):
            checks.check_chunk(odd)


def test_completion_tool_calls_need_a_function() -> None:
    message = {"role": "assistant", "content": None, "tool_calls": [{"id": "t", "type": "function"}]}
    with pytest.raises(UpstreamProtocolError, match="has no function"):
        checks.check_completion({"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]})


@pytest.mark.parametrize("vector", [["a"], [None], [[1.0]], [1e39], [10**400], "x"])
def test_embeddings_must_be_float32_numbers(vector: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        checks.float_vector(vector, "embedding")


def test_embeddings_are_rebuilt_from_checked_fields() -> None:
    data = {
        "data": [{"embedding": [0.5, 1], "index": 0, "extra": [[[[]]]]}],
        "model": "m",
        "deep": [[[[[]]]]],
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    response, prompt = checks.embeddings(data, model="asked")
    assert (
        response
        == {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 1]}],
            "model": "m",
            "usage": {"prompt_tokens": 2, "total_tokens": 2},
        }
        and prompt == 2
    )
    with pytest.raises(UpstreamProtocolError, match="base64"):
        checks.embeddings({"data": [{"embedding": "not base64!"}]}, model="m")
    with pytest.raises(UpstreamProtocolError, match="float32"):
        checks.embeddings({"data": [{"embedding": "AAAAAAA="}]}, model="m")  # 5 bytes


def test_dumps_refuses_what_it_cannot_write_back() -> None:
    deep: Any = []
    for _ in range(2000):
        deep = [deep]
    with pytest.raises(UpstreamProtocolError, match="nested too deep"):
        checks.dumps({"a": deep}, "tool input")


def test_error_message_text_is_a_bounded_string() -> None:
    assert checks.message_text("x" * 10_000) == "x" * 500
    assert checks.message_text([[["deep"]]]) == "(no message)"


@pytest.mark.parametrize("status", [101, 199, 201, 202, 204, 206, 299, 301, 302, 304, 307, 308, 399, 600, 999])
def test_statuses_that_are_neither_200_nor_an_error_are_bad_responses(status: int) -> None:
    assert up.kind_for_status(status) == up.BAD_RESPONSE
    assert up.worth_another_backend(up.kind_for_status(status))


@pytest.mark.parametrize(
    "status, kind",
    [
        (400, up.CLIENT_ERROR),
        (422, up.CLIENT_ERROR),
        (401, up.BACKEND_REJECTED),
        (429, up.RATE_LIMITED),
        (500, up.SERVER_ERROR),
        (599, up.SERVER_ERROR),
    ],
)
def test_known_error_statuses_keep_their_kinds(status: int, kind: str) -> None:
    assert up.kind_for_status(status) == kind


# --- metrics: a bad value that slipped through cannot spoil a series --------------------------


def _metrics() -> tuple[Registry, SidecarMetrics]:
    registry = Registry()
    return registry, SidecarMetrics(registry=registry)


@pytest.mark.parametrize("bad", ["11", math.nan, math.inf, None, [1], True])
def test_a_bad_first_token_count_is_dropped_and_later_ones_count(bad: Any) -> None:
    """The route's first usage had a string for a count: the series was created with it as its min
    and max, and every later request raised comparing an int with it."""
    registry, metrics = _metrics()
    info = BackendInfo(("openai", "m", "h", 443, "p/m"), 1e-6, 2e-6)
    common = dict(
        operation="chat", route="r", info=info, outcome="ok", error_type=None, seconds=0.1, cost=None, ttft=None
    )
    metrics.request(**common, input_tokens=bad, output_tokens=bad)
    for n in (5, 7):
        metrics.request(**common, input_tokens=n, output_tokens=n)
    [(_, point)] = [(k, p) for k, p in metrics.token_usage.points() if k[-1] == "input"]
    assert point[:4] == [2, 12.0, 5, 7]
    assert "gen_ai_client_token_usage_sum" in render_prometheus(registry)


def test_a_bad_cost_is_not_added() -> None:
    _registry, metrics = _metrics()
    info = BackendInfo(("openai", "m", "h", 443, "p/m"), 1e-6, 2e-6)
    for cost in (math.nan, 0.5, "x", math.inf, 0.25):
        metrics.request(
            operation="chat",
            route="r",
            info=info,
            outcome="ok",
            error_type=None,
            seconds=0.1,
            input_tokens=None,
            output_tokens=None,
            cost=cost,
            ttft=None,
        )  # type: ignore[arg-type]
    assert [value for _, value in metrics.cost_usd.points()] == [0.75]
