"""Routing decisions, pure: (model, request headers, data class, compiled table) -> an ordered plan.

Everything that can be decided at config time (header names lowered, regexes
compiled, cumulative weights, and which backends the workload's policy leaves
for each data class) is done once in `RoutingTable.build`; a request does a
dict lookup, a few header comparisons, a tuple index and one random draw.

Policy always wins: the backends and fallbacks a policy denies for a class are
not in that class's candidates at all, so no failover can reach them.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Mapping

import msgspec

from proxy.routing.arms import ArmPicker, sticky_point
from proxy.routing.window import ContextWindowExceeded, RequestSize, Window
from proxy.snapshot import (
    DATA_CLASS_RANK,
    DATA_CLASSES,
    Backend,
    Denial,
    HeaderMatch,
    Policy,
    Route,
    Rule,
    Snapshot,
    TokenRange,
)


class Candidate(msgspec.Struct, frozen=True):
    backend: Backend
    fallback: bool  # False for the weighted pick, True for the rule's fallbacks


class Plan(msgspec.Struct, frozen=True):
    route: Route
    rule: Rule
    candidates: tuple[Candidate, ...]
    # What the workload's policy took out of this rule for the request's data class, and (made at
    # config time, for the audit log) the same in words and the policies that did it.
    removed: tuple[tuple[Backend, Denial], ...] = ()
    removed_why: str = ""
    removed_policies: tuple[str, ...] = ()
    experiment: str | None = None  # the rule's experiment, when it has one
    arm: str | None = None  # the arm this request went to
    data_class: str = ""  # the request's class the plan was made for (masking is per backend and class)
    # Candidates whose context window the request cannot fit: the attempt stage skips them.
    unfit: frozenset[str] = frozenset()


class PolicyRefusal(Exception):
    """The workload's policy leaves nothing this request may use; the message names why."""

    def __init__(self, message: str, *, route: str, policies: tuple[str, ...]) -> None:
        super().__init__(message)
        self.route = route
        self.policies = policies


class _Matcher(msgspec.Struct, frozen=True):
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


class _Choices(msgspec.Struct, frozen=True):
    """What one rule may use for one data class."""

    weighted: tuple[Backend, ...]  # backends with weight > 0
    cumulative: tuple[int, ...]
    fallbacks: tuple[Candidate, ...]
    removed: tuple[tuple[Backend, Denial], ...] = ()
    removed_why: str = ""  # "<backend>: <policy> (<reason>); ..."
    removed_policies: tuple[str, ...] = ()
    refusal: str = ""  # set when nothing is left: why, naming the policies

    def pick(self, draw: float, healthy: Callable[[str], bool] | None, unfit: frozenset[str] = frozenset()) -> Backend:
        if unfit:  # some backend's window is too small for this request: the pick is among the others
            fitting = [b for b in self.weighted if b.key not in unfit]
            if fitting and len(fitting) < len(self.weighted):
                alive = [b for b in fitting if healthy is None or healthy(b.key)]
                return _weighted_choice(alive or fitting, draw)
        if healthy is not None:
            alive = [b for b in self.weighted if healthy(b.key)]
            if alive and len(alive) < len(self.weighted):
                return _weighted_choice(alive, draw)  # the rare path: someone is ejected
        total = self.cumulative[-1]
        index = bisect.bisect_right(self.cumulative, draw * total)
        return self.weighted[min(index, len(self.weighted) - 1)]


class _CompiledExperiment(msgspec.Struct, frozen=True):
    name: str
    sticky_header: str | None  # lower-cased
    arms: tuple[str, ...]
    picker: ArmPicker
    by_class: tuple[tuple[_Choices, ...], ...]  # per arm, indexed by the data class's rank

    def arm(self, headers: Mapping[str, str], draw: Callable[[], float]) -> int:
        if self.sticky_header is not None:
            value = headers.get(self.sticky_header)
            if value is not None:
                return self.picker.index(sticky_point(self.name, value))
        return self.picker.index(draw())


class _CompiledRule(msgspec.Struct, frozen=True):
    rule: Rule
    matchers: tuple[_Matcher, ...]
    by_class: tuple[_Choices, ...]  # indexed by the data class's rank
    experiment: _CompiledExperiment | None = None
    input_tokens: TokenRange | None = None

    def matches(self, headers: Mapping[str, str], size: RequestSize | None) -> bool:
        if self.input_tokens is not None and (size is None or not self.input_tokens.holds(size.input_tokens)):
            return False
        return all(m.matches(headers) for m in self.matchers)


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


def _choices(rule: Rule, route: Route, data_class: str, denied: dict[str, list[Denial]]) -> _Choices:
    removed = tuple((b, denied[b.key][0]) for b in (*rule.backends, *rule.fallbacks) if b.key in denied)
    gone = {b.key for b, _ in removed}
    weighted = tuple(b for b in rule.backends if b.weight > 0 and b.key not in gone)
    cumulative: list[int] = []
    running = 0
    for backend in weighted:
        running += backend.weight
        cumulative.append(running)
    fallbacks = tuple(Candidate(b, fallback=True) for b in rule.fallbacks if b.key not in gone)
    why = "; ".join(f"{b.key}: {d.policy} ({d.reason})" for b, d in removed)
    refusal = ""
    if not weighted and not fallbacks:
        refusal = (
            f"data class {data_class!r} may not be sent to any backend of route {route.name!r} "
            f"(rule {rule.name!r}): {why}"
        )
    elif not weighted:  # only fallbacks are left: they become the primaries, in order
        first, *rest = fallbacks
        weighted, cumulative = (first.backend,), [1]
        fallbacks = tuple(rest)
    return _Choices(
        weighted=weighted,
        cumulative=tuple(cumulative),
        fallbacks=fallbacks,
        removed=removed,
        removed_why=why,
        removed_policies=tuple(dict.fromkeys(d.policy for _, d in removed)),
        refusal=refusal,
    )


def _compile_rule(rule: Rule, route: Route, policy: Policy) -> _CompiledRule:
    experiment = None
    if rule.experiment is not None:
        spec = rule.experiment
        experiment = _CompiledExperiment(
            name=spec.name,
            sticky_header=spec.sticky_header.lower() if spec.sticky_header is not None else None,
            arms=tuple(a.name for a in spec.arms),
            picker=ArmPicker.of([a.weight for a in spec.arms]),
            by_class=tuple(
                _by_class(msgspec.structs.replace(rule, backends=a.backends, experiment=None), route, policy)
                for a in spec.arms
            ),
        )
    return _CompiledRule(
        rule=rule,
        matchers=tuple(_compile_matcher(m) for m in rule.match_headers),
        by_class=_by_class(rule, route, policy),
        experiment=experiment,
        input_tokens=rule.match_input_tokens,
    )


def _by_class(rule: Rule, route: Route, policy: Policy) -> tuple[_Choices, ...]:
    keys = {b.key for b in (*rule.backends, *rule.fallbacks)}
    unrestricted: _Choices | None = None  # shared by every class the policy leaves the whole rule
    by_class: list[_Choices] = []
    for data_class in DATA_CLASSES:
        denied: dict[str, list[Denial]] = {}
        for denial in policy.denied_backends:
            if denial.key in keys and data_class in denial.data_classes:
                denied.setdefault(denial.key, []).append(denial.denial)
        if denied:
            by_class.append(_choices(rule, route, data_class, denied))
            continue
        if unrestricted is None:
            unrestricted = _choices(rule, route, data_class, denied)
        by_class.append(unrestricted)
    return tuple(by_class)


class NoMatchingRule(Exception):
    pass


_Entry = tuple[Route, tuple[_CompiledRule, ...], Denial | None]


class RoutingTable:
    def __init__(self, routes: dict[str, _Entry], windows: Mapping[str, Window] | None = None) -> None:
        self._routes = routes
        self.models: list[str] = sorted(routes)
        self._windows = dict(windows or {})  # backend key -> its model's window, for those that declare one
        # Per choices (by id: they live as long as the table), the backends with a window, made once here
        # so that a request checks only those.
        self._windowed: dict[int, tuple[tuple[str, Window], ...]] = {}
        if self._windows:
            for _, rules, _ in routes.values():
                for compiled in rules:
                    arms = compiled.experiment.by_class if compiled.experiment is not None else ()
                    for choices in (*compiled.by_class, *(c for arm in arms for c in arm)):
                        keys = (*(b.key for b in choices.weighted), *(c.backend.key for c in choices.fallbacks))
                        self._windowed[id(choices)] = tuple((k, self._windows[k]) for k in keys if k in self._windows)
        # Whether a request's size is read at all: only when some rule matches on it or some window is known.
        self.needs_size = bool(self._windows) or any(
            c.input_tokens is not None for _, rules, _ in routes.values() for c in rules
        )

    @classmethod
    def build(cls, snapshot: Snapshot) -> RoutingTable:
        policy = snapshot.policy
        route_denials = {d.model: d.denial for d in policy.denied_routes}
        windows: dict[str, Window] = {}
        for provider in snapshot.providers:
            for model, declared in provider.models.items():
                if declared.context_window is not None:
                    windows[f"{provider.name}/{model}"] = Window(declared.context_window, declared.max_output_tokens)
        return cls(
            {
                r.model: (r, tuple(_compile_rule(rule, r, policy) for rule in r.rules), route_denials.get(r.model))
                for r in snapshot.routes
            },
            windows,
        )

    def _unfit(self, choices: _Choices, size: RequestSize) -> frozenset[str]:
        windowed = self._windowed.get(id(choices))
        if not windowed:
            return frozenset()
        tokens, output = size.input_tokens, size.requested_output
        return frozenset(key for key, window in windowed if not window.fits(tokens, output))

    def plan(
        self,
        model: str,
        headers: Mapping[str, str],
        *,
        draw: Callable[[], float],
        healthy: Callable[[str], bool] | None = None,
        data_class: str = "internal",
        size: RequestSize | None = None,
        fit: bool = True,
    ) -> Plan | None:
        """The plan for one request, or None when no route serves `model`.

        `headers` must answer lower-case names (aiohttp's CIMultiDict does).
        `healthy` (when some backend is ejected) keeps ejected backends out of
        the weighted pick, unless all are ejected; fallbacks stay as configured.
        Raises NoMatchingRule when the route exists but none of its rules match,
        PolicyRefusal when the workload's policy leaves it nothing for `data_class`.
        `size` (given when `needs_size`) is matched by rules' `inputTokens` and keeps backends
        whose window it cannot fit out of the pick (and marks them `unfit`); raises
        ContextWindowExceeded when no candidate fits. `fit=False` (counting tokens, which writes
        no answer) reads `size` for the rules only.
        """
        entry = self._routes.get(model)
        if entry is None:
            return None
        route, rules, denial = entry
        if denial is not None:
            raise PolicyRefusal(
                f"route {route.name!r} (model {model!r}) is not allowed for this workload: "
                f"{denial.policy} ({denial.reason})",
                route=route.name,
                policies=(denial.policy,),
            )
        for compiled in rules:
            if compiled.matches(headers, size):
                experiment, arm = compiled.experiment, None
                if experiment is None:
                    choices = compiled.by_class[DATA_CLASS_RANK[data_class]]
                else:
                    index = experiment.arm(headers, draw)
                    choices, arm = experiment.by_class[index][DATA_CLASS_RANK[data_class]], experiment.arms[index]
                if choices.refusal:
                    raise PolicyRefusal(choices.refusal, route=route.name, policies=choices.removed_policies)
                unfit = self._unfit(choices, size) if fit and size is not None and self._windows else frozenset()
                primary = choices.pick(draw(), healthy, unfit)
                candidates = (
                    Candidate(primary, fallback=False),
                    *tuple(c for c in choices.fallbacks if c.backend.key != primary.key),
                )
                if unfit and all(c.backend.key in unfit for c in candidates):
                    assert size is not None
                    largest = max(self._windows[c.backend.key].context for c in candidates)
                    raise ContextWindowExceeded(route=route.name, size=size, largest=largest)
                return Plan(
                    route=route,
                    rule=compiled.rule,
                    candidates=candidates,
                    removed=choices.removed,
                    removed_why=choices.removed_why,
                    removed_policies=choices.removed_policies,
                    experiment=experiment.name if experiment is not None else None,
                    arm=arm,
                    data_class=data_class,
                    unfit=unfit & {c.backend.key for c in candidates} if unfit else unfit,
                )
        measured = f" and its estimated {size.input_tokens} input tokens" if size is not None else ""
        raise NoMatchingRule(f"no rule of route {route.name!r} matches this request's headers{measured}")
