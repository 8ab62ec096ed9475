"""Routing decisions, pure: (model, request headers, compiled table) -> an ordered plan.

Everything that can be decided at config time (header names lowered, regexes
compiled, cumulative weights) is done once in `RoutingTable.build`; a request
does a dict lookup, a few header comparisons and one random draw.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from proxy.snapshot import Backend, HeaderMatch, Route, Rule, Snapshot


@dataclass(frozen=True, slots=True)
class Candidate:
    backend: Backend
    fallback: bool  # False for the weighted pick, True for the rule's fallbacks


@dataclass(frozen=True, slots=True)
class Plan:
    route: Route
    rule: Rule
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True)
class _Matcher:
    name: str
    value: str | None
    regex: re.Pattern[str] | None

    def matches(self, headers: Mapping[str, str]) -> bool:
        actual = headers.get(self.name)
        if actual is None:
            return False
        if self.value is not None and actual != self.value:
            return False
        return self.regex is None or self.regex.fullmatch(actual) is not None


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: Rule
    matchers: tuple[_Matcher, ...]
    weighted: tuple[Backend, ...]  # backends with weight > 0
    cumulative: tuple[int, ...]
    fallbacks: tuple[Candidate, ...]

    def pick(self, draw: float, healthy: Callable[[str], bool] | None) -> Backend:
        if healthy is not None:
            alive = [b for b in self.weighted if healthy(b.key)]
            if alive and len(alive) < len(self.weighted):
                return _weighted_choice(alive, draw)  # the rare path: someone is ejected
        total = self.cumulative[-1]
        index = bisect.bisect_right(self.cumulative, draw * total)
        return self.weighted[min(index, len(self.weighted) - 1)]


def _weighted_choice(backends: list[Backend], draw: float) -> Backend:
    point = draw * sum(b.weight for b in backends)
    for backend in backends:
        point -= backend.weight
        if point < 0:
            return backend
    return backends[-1]


def _compile_matcher(match: HeaderMatch) -> _Matcher:
    regex = re.compile(match.regex) if match.regex is not None else None
    return _Matcher(name=match.name.lower(), value=match.value, regex=regex)


def _compile_rule(rule: Rule) -> _CompiledRule:
    weighted = tuple(b for b in rule.backends if b.weight > 0)
    cumulative: list[int] = []
    running = 0
    for backend in weighted:
        running += backend.weight
        cumulative.append(running)
    return _CompiledRule(
        rule=rule,
        matchers=tuple(_compile_matcher(m) for m in rule.match_headers),
        weighted=weighted,
        cumulative=tuple(cumulative),
        fallbacks=tuple(Candidate(b, fallback=True) for b in rule.fallbacks),
    )


class NoMatchingRule(Exception):
    pass


class RoutingTable:
    def __init__(self, routes: dict[str, tuple[Route, tuple[_CompiledRule, ...]]]) -> None:
        self._routes = routes
        self.models: list[str] = sorted(routes)

    @classmethod
    def build(cls, snapshot: Snapshot) -> RoutingTable:
        return cls({r.model: (r, tuple(_compile_rule(rule) for rule in r.rules)) for r in snapshot.routes})

    def serves(self, model: str) -> bool:
        return model in self._routes

    def plan(
        self,
        model: str,
        headers: Mapping[str, str],
        *,
        draw: Callable[[], float],
        healthy: Callable[[str], bool] | None = None,
    ) -> Plan | None:
        """The plan for one request, or None when no route serves `model`.

        `headers` must answer lower-case names (aiohttp's CIMultiDict does).
        `healthy` (when some backend is ejected) keeps ejected backends out of
        the weighted pick, unless all are ejected; fallbacks stay as configured.
        Raises NoMatchingRule when the route exists but none of its rules match.
        """
        entry = self._routes.get(model)
        if entry is None:
            return None
        route, rules = entry
        for compiled in rules:
            if all(m.matches(headers) for m in compiled.matchers):
                primary = compiled.pick(draw(), healthy)
                candidates = (Candidate(primary, fallback=False),) + tuple(
                    c for c in compiled.fallbacks if c.backend.key != primary.key
                )
                return Plan(route=route, rule=compiled.rule, candidates=candidates)
        raise NoMatchingRule(f"no rule of route {route.name!r} matches this request's headers")
