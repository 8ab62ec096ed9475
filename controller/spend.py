"""Budget spend, pure: which counters each policy's budgets have, what their values add up to, how that reads.

The sidecars charge each budget on a counter in the shared store, `{<prefix>}:<limit key>/<measure>/<window>`
(`usd_day` per UTC day, `usd_month` per calendar month; the value is micro-USD, a string integer), where
the limit key is `controller.policy.counter_key`: `<owner>/<limit>/policy`, or one counter per subject,
`<owner>/<limit>/workload/<ns>/<sa>` or `<owner>/<limit>/namespace/<ns>`. `summarize` turns the values
read back (`controller.spend_reader` does the I/O) into one `PolicySpend` per policy; `worth_publishing`
says whether a new reading moved enough to be written to status; `spend_column` is the SPEND column.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from controller.api import ClusterModelPolicy, ModelPolicy
from controller.policy import limit_owner
from controller.store import Key, key_of
from shared.budget_windows import budget_window

BudgetMeasure = Literal["usd_day", "usd_month"]
SpendState = Literal["read", "unreachable", "none"]
MICRO_USD = 1_000_000
TOP_SUBJECTS = 5  # per scoped budget, the subjects that spent most
WINDOW_WORDS: dict[BudgetMeasure, Literal["day", "month"]] = {"usd_day": "day", "usd_month": "month"}
# What moves a number enough to write it at once: a cent, or half a percent of the budget when that is more.
CENT = 10_000
STEP_OF_BUDGET = 0.005
# Smaller moves are written too, at most this often (seconds): status follows spend without a write per read.
SMALL_MOVES_EVERY = 60.0
COLUMN_ENTRIES = 3


@dataclass(frozen=True, slots=True)
class Budget:
    """One budget of one policy's limit: what the status reports on."""

    policy: Key
    limit: str
    per: Literal["workload", "namespace", "policy"]
    measure: BudgetMeasure
    budget_micro_usd: int
    counter_prefix: str  # the limit's key up to its scope: "<owner>/<limit>/"


@dataclass(frozen=True, slots=True)
class BudgetSpend:
    limit: str
    per: Literal["workload", "namespace", "policy"]
    measure: BudgetMeasure
    window: str  # "2026-03-31" or "2026-03": the window the numbers are of
    budget_micro_usd: int
    spent_micro_usd: int  # against the budget: the counter's value, or with one counter per subject the highest
    total_micro_usd: int  # every subject together
    subjects: int  # counters found (0 or 1 for a limit `per: policy`)
    top: tuple[tuple[str, int], ...] = ()  # scoped: (subject, micro-USD), most first

    @property
    def scoped(self) -> bool:
        return self.per != "policy"


@dataclass(frozen=True, slots=True)
class PolicySpend:
    """What a policy's status says about its budgets."""

    state: SpendState  # read; unreachable (the last numbers kept, if any); none (no shared store)
    budgets: tuple[BudgetSpend, ...] = ()
    read_at: str = ""  # RFC 3339, when `budgets` were read; "" before any read
    partial: bool = False  # the scan stopped at its bound: some subjects are missing
    problem: str = ""  # unreachable: what went wrong (an exception's type, never its text)


NO_STORE = PolicySpend(state="none")


def budgets_of(policies: Iterable[ModelPolicy | ClusterModelPolicy]) -> tuple[Budget, ...]:
    """Every budget of every policy, in the policies' and limits' order."""
    out: list[Budget] = []
    for policy in policies:
        owner = limit_owner(policy)
        for limit in policy.spec.limits:
            amounts: tuple[tuple[BudgetMeasure, float | None], ...] = (
                ("usd_day", limit.usd_per_day),
                ("usd_month", limit.usd_per_month),
            )
            for measure, usd in amounts:
                if usd is None:
                    continue
                out.append(
                    Budget(
                        policy=key_of(policy),
                        limit=limit.name,
                        per=limit.per,
                        measure=measure,
                        budget_micro_usd=round(usd * MICRO_USD),
                        counter_prefix=f"{owner}/{limit.name}/",
                    )
                )
    return tuple(out)


def store_tag(prefix: str) -> str:
    """What every key of the store begins with (the sidecar's hash tag)."""
    return "{" + prefix + "}:"


def scan_pattern(prefix: str) -> str:
    """One SCAN pattern for every budget counter of every window (the key prefix has no glob characters)."""
    return store_tag(prefix) + "*/usd_*"


def windows_at(now_s: float) -> dict[BudgetMeasure, str]:
    return {m: budget_window(m, now_s)[0] for m in WINDOW_WORDS}


def _subject(rest: str, per: str) -> str | None:
    """The subject a counter's scope names ("" for the policy's one counter); None for another scope."""
    if per == "policy":
        return "" if rest == "policy" else None
    kind, _, subject = rest.partition("/")
    return subject if kind == per and subject else None


def summarize(
    budgets: Iterable[Budget],
    values: Mapping[str, int],
    *,
    prefix: str,
    now_s: float,
    read_at: str,
    partial: bool = False,
) -> dict[Key, PolicySpend]:
    """Each policy's budgets from the counters read (store key -> micro-USD); a counter absent is nothing spent.

    Only the current window counts (the store keeps a spent window a day past its end); counters of a
    scope the limit no longer has (its `per` was changed) are left out."""
    tag = store_tag(prefix)
    windows = windows_at(now_s)
    current: dict[str, str] = {str(m): w for m, w in windows.items()}
    by_counter: dict[tuple[str, str], Budget] = {}  # (counter prefix, measure)
    for budget in budgets:
        by_counter[(budget.counter_prefix, budget.measure)] = budget
    found: dict[tuple[str, str], dict[str, int]] = {k: {} for k in by_counter}
    owners = {b.counter_prefix for b in by_counter.values()}
    for key, value in values.items():
        if not key.startswith(tag):
            continue
        limit_key, measure, window = _split(key[len(tag) :])
        if window != current.get(measure):
            continue
        # "<owner>/<limit>/" is 4 segments of a ModelPolicy (kind, namespace, name, limit), 3 of a cluster one.
        parts = limit_key.split("/")
        cut = 4 if parts[0] == "ModelPolicy" else 3
        head, rest = "/".join(parts[:cut]) + "/", "/".join(parts[cut:])
        if head not in owners or (owning := by_counter.get((head, measure))) is None:
            continue
        subject = _subject(rest, owning.per)
        if subject is not None:
            found[(head, measure)][subject] = max(value, 0)
    per_policy: dict[Key, list[BudgetSpend]] = {}
    for (head, measure), budget in by_counter.items():
        subjects = found[(head, measure)]
        ranked = sorted(subjects.items(), key=lambda item: (-item[1], item[0]))
        per_policy.setdefault(budget.policy, []).append(
            BudgetSpend(
                limit=budget.limit,
                per=budget.per,
                measure=budget.measure,
                window=windows[budget.measure],
                budget_micro_usd=budget.budget_micro_usd,
                spent_micro_usd=ranked[0][1] if ranked else 0,
                total_micro_usd=sum(subjects.values()),
                subjects=len(subjects),
                top=tuple(ranked[:TOP_SUBJECTS]) if budget.per != "policy" else (),
            )
        )
    return {
        key: PolicySpend(state="read", budgets=tuple(spends), read_at=read_at, partial=partial)
        for key, spends in per_policy.items()
    }


def _split(counter: str) -> tuple[str, str, str]:
    """`<limit key>/<measure>/<window>` in its three parts ("" where a part is missing)."""
    head, _, window = counter.rpartition("/")
    limit_key, _, measure = head.rpartition("/")
    return limit_key, measure, window


def unreachable(last: PolicySpend | None, problem: str) -> PolicySpend:
    """The store did not answer: the last numbers stay, with the time they were read."""
    if last is None or last.state == "none":
        return PolicySpend(state="unreachable", problem=problem)
    return PolicySpend(
        state="unreachable", budgets=last.budgets, read_at=last.read_at, partial=last.partial, problem=problem
    )


def _step(budget: BudgetSpend) -> int:
    return max(CENT, round(budget.budget_micro_usd * STEP_OF_BUDGET))


def _cents(micro: int) -> int:
    return round(micro / CENT)


def worth_publishing(published: PolicySpend | None, new: PolicySpend, *, since_published: float) -> bool:
    """Whether `new` is worth a status write, given what status carries now (published `since_published`
    seconds ago): a change of state or of budgets, a move of a step (a cent, or half a percent of the
    budget), a budget reached or left, another subject on top; smaller moves of a cent at most every
    `SMALL_MOVES_EVERY` seconds. Equal numbers are never written again (status keeps their read time)."""
    if published is None or published.state != new.state or published.partial != new.partial:
        return True  # (a new error type while still unreachable is no news: it would flap between reads)
    old_budgets, new_budgets = published.budgets, new.budgets
    shape = [(b.limit, b.per, b.measure, b.window, b.budget_micro_usd) for b in old_budgets]
    if shape != [(b.limit, b.per, b.measure, b.window, b.budget_micro_usd) for b in new_budgets]:
        return True
    moved_a_cent = False
    for old, now in zip(old_budgets, new_budgets, strict=True):
        step = _step(now)
        if (
            abs(now.spent_micro_usd - old.spent_micro_usd) >= step
            or abs(now.total_micro_usd - old.total_micro_usd) >= step
        ):
            return True
        if (now.spent_micro_usd >= now.budget_micro_usd) != (old.spent_micro_usd >= old.budget_micro_usd):
            return True
        if now.subjects != old.subjects or [s for s, _ in now.top[:1]] != [s for s, _ in old.top[:1]]:
            return True
        if _cents(now.spent_micro_usd) != _cents(old.spent_micro_usd) or _cents(now.total_micro_usd) != _cents(
            old.total_micro_usd
        ):
            moved_a_cent = True
    return moved_a_cent and since_published >= SMALL_MOVES_EVERY


# --- how it reads ----------------------------------------------------------------------


def usd(micro: int) -> float:
    """Micro-USD as USD to the cent, as status shows it."""
    return round(micro / MICRO_USD, 2)


def money(micro: int, *, whole: bool = False) -> str:
    """`$12.40`; with `whole`, a round amount without cents (`$50`, for budgets)."""
    cents = _cents(micro)
    if whole and cents % 100 == 0:
        return f"${cents // 100:,}"
    return f"${cents // 100:,}.{cents % 100:02d}"


def spend_column(spend: PolicySpend) -> str:
    """The SPEND column: `$12.40/$50 day`, one entry per budget (the highest subject's when counted per
    workload or namespace), `(stale)` while the store does not answer."""
    if spend.state == "none":
        return "not shared (no limit store)"
    if not spend.budgets:
        return "unknown (store unreachable)" if spend.state == "unreachable" else ""
    entries = []
    for budget in spend.budgets[:COLUMN_ENTRIES]:
        entry = f"{money(budget.spent_micro_usd)}/{money(budget.budget_micro_usd, whole=True)} "
        entry += WINDOW_WORDS[budget.measure]
        if budget.scoped and budget.subjects > 1:
            entry += f" (top of {budget.subjects} {budget.per}s)"
        entries.append(entry)
    if len(spend.budgets) > COLUMN_ENTRIES:
        entries.append(f"+{len(spend.budgets) - COLUMN_ENTRIES} more")
    text = ", ".join(entries)
    return text + " (stale)" if spend.state == "unreachable" else text
