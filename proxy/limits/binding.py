"""Which counters bind a request, worked out once per snapshot.

A request's counters depend only on its route and the backend it is sent to (provider and upstream
model), and a snapshot names every such triple: each rule's backends and fallbacks, and the cheaper
backends budgets reroute to. So the globs are matched here, at snapshot load, and a request does
one dict lookup. With no limits and no capacity in the snapshot the table is empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

import msgspec

from proxy.snapshot import Capacity, Limit, Provider, Snapshot

if TYPE_CHECKING:  # loaded by the snapshots that have limits or capacity (`LimitTable.build`)
    from proxy.limits.model import Counter, Measure

BindingKey = tuple[str, str, str]  # (route name, provider, upstream model)
_NONE: tuple[Counter, ...] = ()


def limit_counters(limit: Limit) -> tuple[Counter, ...]:
    """One counter per number the limit sets."""
    from proxy.limits.model import Counter  # (at snapshot build, for a snapshot with limits)

    numbers: tuple[tuple[Measure, int | None], ...] = (
        ("requests", limit.requests_per_minute),
        ("tokens", limit.tokens_per_minute),
        ("input_tokens", limit.input_tokens_per_minute),
        ("output_tokens", limit.output_tokens_per_minute),
        ("concurrency", limit.concurrent_requests),
        ("usd_day", _micro(limit.usd_per_day)),
        ("usd_month", _micro(limit.usd_per_month)),
    )
    return tuple(
        Counter(
            key=f"{limit.key}/{measure}",
            measure=measure,
            limit=number,
            owner=limit.policy,
            name=limit.name,
            failure_mode=limit.failure_mode,
            reroute_to=limit.reroute_to
            if measure in ("usd_day", "usd_month") and limit.on_budget_spent == "reroute"
            else (),
        )
        for measure, number in numbers
        if number is not None
    )


def capacity_counters(provider: Provider, capacity: Capacity) -> tuple[Counter, ...]:
    from proxy.limits.model import Counter  # (at snapshot build, for a provider with capacity)

    namespace, _, name = provider.name.partition(".")
    numbers: tuple[tuple[Measure, int | None], ...] = (
        ("requests", capacity.requests_per_minute),
        ("tokens", capacity.tokens_per_minute),
    )
    return tuple(
        Counter(
            key=f"{capacity.key}/{measure}",
            measure=measure,
            limit=number,
            owner=f"ModelProvider {namespace}/{name}",
            name=f"capacity {capacity.model}",
            failure_mode="open",  # a quota protects availability, never money
            capacity=True,
        )
        for measure, number in numbers
        if number is not None
    )


def _micro(usd: float | None) -> int | None:
    from proxy.limits.model import MICRO_USD

    return None if usd is None else round(usd * MICRO_USD)


def _short(name: str, sep: str) -> str:
    return name.partition(sep)[2] or name


def _matches(patterns: Sequence[str] | None, name: str) -> bool:
    return patterns is None or any(fnmatchcase(name, p) for p in patterns)


def limit_binds(limit: Limit, route: str, provider: str, model: str) -> bool:
    """Whether `limit` counts a request on this route to this backend (compiled names, as in the snapshot)."""
    return (
        _matches(limit.routes, _short(route, "/"))
        and _matches(limit.providers, _short(provider, "."))
        and _matches(limit.models, model)
    )


class LimitTable(msgspec.Struct, frozen=True):
    bindings: dict[BindingKey, tuple[Counter, ...]]
    # The same, for a request a spent budget rerouted: the budgets that rerouted it no longer count it.
    rerouted: dict[BindingKey, tuple[Counter, ...]]

    @property
    def empty(self) -> bool:
        return not self.bindings

    def counters(self, route: str, provider: str, model: str, *, rerouted: bool = False) -> tuple[Counter, ...]:
        """The counters a request on `route` sent to `provider`/`model` is checked against (all must pass)."""
        return (self.rerouted if rerouted else self.bindings).get((route, provider, model), _NONE)

    @classmethod
    def build(cls, snapshot: Snapshot) -> LimitTable:
        limits = snapshot.policy.limits
        providers = {p.name: p for p in snapshot.providers}
        if not limits and not any(p.capacity for p in snapshot.providers):
            return cls({}, {})
        per_limit = {limit.key: limit_counters(limit) for limit in limits}
        per_capacity = {(p.name, c.key): capacity_counters(p, c) for p in snapshot.providers for c in p.capacity}
        reroutes = tuple(b for limit in limits for b in limit.reroute_to)
        bindings: dict[BindingKey, tuple[Counter, ...]] = {}
        rerouted: dict[BindingKey, tuple[Counter, ...]] = {}
        for route in snapshot.routes:
            triples = {(b.provider, b.model) for rule in route.rules for b in (*rule.backends, *rule.fallbacks)}
            triples |= {(b.provider, b.model) for b in reroutes}
            for provider, model in sorted(triples):
                counters: list[Counter] = []
                for limit in limits:
                    if limit_binds(limit, route.name, provider, model):
                        counters.extend(per_limit[limit.key])
                known = providers.get(provider)
                for capacity in known.capacity if known is not None else ():
                    if fnmatchcase(model, capacity.model):
                        counters.extend(per_capacity[(provider, capacity.key)])
                if not counters:
                    continue
                key = (route.name, provider, model)
                bindings[key] = tuple(counters)
                rerouted[key] = tuple(c for c in counters if not c.reroute_to)
        return cls(bindings, rerouted)
