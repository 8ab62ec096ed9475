"""Snapshots with limits for a real sidecar in front of the fake providers, and reading its counters.

Every limit gets a fresh counter key, so tests that share one Redis never share a counter."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import anthropic

from tests.fakes.server import DEFAULT_KEYS
from tests.integration.sidecar import SidecarProcess

POLICY = "ModelPolicy team-a/caps"
PRICE_IN, PRICE_OUT = 2.5, 10.0  # USD per million tokens, i.e. micro-USD per token
PRICE_CACHED, PRICE_CACHE_WRITE = 0.25, 3.125  # claude's prompt-cache reads and writes
# An Anthropic call with a cache breakpoint: the fake reads its prompt from the cache (or writes it
# there when scripted `cache_write`).
CACHED_PROMPT: dict[str, Any] = {
    "model": "claude",
    "max_tokens": 50,
    "system": [{"type": "text", "text": "You answer briefly.", "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": "hi"}],
}


def limit(name: str, **numbers: Any) -> dict[str, Any]:
    """A compiled limit of POLICY for the workload; `numbers` in the snapshot's spelling (camelCase)."""
    return {"policy": POLICY, "name": name, "key": f"ModelPolicy/team-a/caps/{name}-{uuid.uuid4().hex[:8]}/policy",
            **numbers}  # fmt: skip


def capacity(model: str, **numbers: Any) -> dict[str, Any]:
    return {"key": f"ModelProvider/team-a/oai/capacity/{model}-{uuid.uuid4().hex[:8]}", "model": model, **numbers}


def limited_snapshot(
    openai_url: str,
    anthropic_url: str,
    *,
    limits: list[dict[str, Any]] = (),  # type: ignore[assignment]
    oai_capacity: list[dict[str, Any]] = (),  # type: ignore[assignment]
    limit_store: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Routes: `gpt` (oai/gpt-4o), `claude` (claude/claude-sonnet-4-5), `failover` (oai/gpt-4o, then
    spare/gpt-4o-mini), `embed` (oai/text-embedding-3-small). oai and spare are the same fake."""
    pricing = {"inputPerMillion": PRICE_IN, "outputPerMillion": PRICE_OUT}
    one_try = {"attempts": 1}
    snapshot: dict[str, Any] = {
        "providers": [
            {"name": "oai", "type": "openai", "baseUrl": openai_url + "/v1", "apiKey": DEFAULT_KEYS["openai"],
             "pricing": {"gpt-4o": pricing}, "capacity": list(oai_capacity)},
            {"name": "spare", "type": "openai", "baseUrl": openai_url + "/v1", "apiKey": DEFAULT_KEYS["openai"],
             "pricing": {"gpt-4o-mini": {"inputPerMillion": 0.15, "outputPerMillion": 0.6}}},
            {"name": "claude", "type": "anthropic", "baseUrl": anthropic_url, "apiKey": DEFAULT_KEYS["anthropic"],
             "pricing": {"claude-sonnet-4-5": {**pricing, "cachedInputPerMillion": PRICE_CACHED,
                                               "cacheWritePerMillion": PRICE_CACHE_WRITE}}},
        ],
        "routes": [
            {"name": "gpt", "model": "gpt", "rules": [{"name": "default", "retry": one_try,
             "backends": [{"provider": "oai", "model": "gpt-4o"}]}]},
            {"name": "claude", "model": "claude", "rules": [{"name": "default", "retry": one_try,
             "backends": [{"provider": "claude", "model": "claude-sonnet-4-5"}]}]},
            {"name": "failover", "model": "failover", "rules": [{"name": "default", "retry": one_try,
             "backends": [{"provider": "oai", "model": "gpt-4o"}],
             "fallbacks": [{"provider": "spare", "model": "gpt-4o-mini"}]}]},
            {"name": "embed", "model": "embed", "rules": [{"name": "default", "retry": one_try,
             "backends": [{"provider": "oai", "model": "text-embedding-3-small"}]}]},
        ],
        "policy": {"workload": "team-a/app", "policies": [POLICY], "limits": list(limits)},
    }  # fmt: skip
    if limit_store is not None:
        snapshot["limitStore"] = limit_store
    return snapshot


def post(base_url: str, path: str, body: dict[str, Any], **headers: str) -> tuple[int, dict[str, str], bytes]:
    """(status, headers lowered, body) of a POST, errors included."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        base_url + path, data=data, headers={"content-type": "application/json", **headers}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def chat(model: str = "gpt", text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def counter_standing(limits_page: dict[str, Any], name: str, measure: str) -> dict[str, Any]:
    """Where the named limit's counter stands, from the admin port's /limits."""
    for entry in limits_page["limits"]:
        if entry["name"] == name and entry["measure"] == measure:
            return entry["standing"]
    raise AssertionError(f"no counter {name}/{measure} on /limits: {limits_page}")


def assert_cache_reads_and_writes_charged_at_their_prices(
    sidecar: SidecarProcess, fake_anthropic: Any, spent: Callable[[int], int]
) -> None:
    """The cached prompt twice through `sidecar`'s budget: written to the cache the first time, read
    the second, each charged at its own price (above, then below, all input at the input price).
    `spent(want)` reads the budget's micro-USD once it is `want` (settlement runs after the answer)."""
    claude = anthropic.Anthropic(base_url=sidecar.base_url, api_key="x", max_retries=0, timeout=20)
    fake_anthropic.script([{"cache_write": True}])  # the prompt's first time: written, then read
    total = 0
    for written in (True, False):
        usage = claude.messages.create(**CACHED_PROMPT).usage
        assert (usage.cache_creation_input_tokens > 0) is written and (usage.cache_read_input_tokens > 0) is not written
        charge, at_input_price = cache_priced(usage)
        assert charge > at_input_price if written else charge < at_input_price
        total += charge
        assert spent(total) == total


def cache_priced(usage: Any) -> tuple[int, int]:
    """An Anthropic answer's usage in micro-USD (rounded up): with prompt-cache reads and writes at
    their own prices, and with all its input at the input price. Its `input_tokens` leave them out."""
    cache = (usage.cache_read_input_tokens or 0, usage.cache_creation_input_tokens or 0)
    rest = usage.input_tokens * PRICE_IN + usage.output_tokens * PRICE_OUT
    return (
        math.ceil(rest + cache[0] * PRICE_CACHED + cache[1] * PRICE_CACHE_WRITE),
        math.ceil(rest + sum(cache) * PRICE_IN),
    )
