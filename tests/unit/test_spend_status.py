"""Budget spend in policy status, the pure part: counters read from the store -> each policy's spend ->
the status and the SPEND column `kubectl get mwpol` shows; and when a new reading is worth a write.

No sockets: the counters are a dict of the keys the sidecars write (`{modelway}:<limit key>/<measure>/<window>`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller import spend as sp
from controller.compile import judge
from controller.status import Wanted, condition_events, desired_statuses, render, timeless
from controller.store import Key
from tests.unit.test_compile import resources
from tests.unit.test_policy_compile import cluster_policy, policy

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 3, 31, 15, 30, tzinfo=dt.UTC).timestamp()
DAY, MONTH = "2026-03-31", "2026-03"
READ_AT = "2026-03-31T15:30:00Z"
CAPS: Key = ("ModelPolicy", "team-a", "caps")
ORG: Key = ("ClusterModelPolicy", "", "org")


def usd(amount: float) -> int:
    return round(amount * 1_000_000)


def key(counter: str, measure: str = "usd_day", window: str = DAY) -> str:
    return f"{{modelway}}:{counter}/{measure}/{window}"


def read(values: dict[str, int], *policies: Any, partial: bool = False) -> dict[Key, sp.PolicySpend]:
    return sp.summarize(sp.budgets_of(policies), values, prefix="modelway", now_s=NOW, read_at=READ_AT, partial=partial)


# --- counters -> spend ----------------------------------------------------------------


def test_a_policy_wide_budget_is_its_one_counter_against_the_budget() -> None:
    caps = policy("caps", limits=[{"name": "team", "usdPerDay": 50, "usdPerMonth": 1000, "per": "policy"}])
    values = {
        key("ModelPolicy/team-a/caps/team/policy"): usd(12.40),
        key("ModelPolicy/team-a/caps/team/policy", "usd_month", MONTH): usd(310.5),
    }
    (day, month) = read(values, caps)[CAPS].budgets
    assert (day.measure, day.window, day.spent_micro_usd, day.budget_micro_usd) == ("usd_day", DAY, usd(12.4), usd(50))
    assert (month.measure, month.window, month.spent_micro_usd) == ("usd_month", MONTH, usd(310.5))
    assert day.top == () and day.subjects == 1
    assert sp.spend_column(read(values, caps)[CAPS]) == "$12.40/$50 day, $310.50/$1,000 month"


def test_per_workload_the_top_subjects_and_the_one_closest_to_its_budget() -> None:
    caps = policy("caps", limits=[{"name": "mine", "usdPerDay": 50}])  # per workload: each has $50
    values = {
        key("ModelPolicy/team-a/caps/mine/workload/team-a/bot"): usd(12.4),
        key("ModelPolicy/team-a/caps/mine/workload/team-a/batch"): usd(40),
        key("ModelPolicy/team-a/caps/mine/workload/team-a/cron"): usd(0.5),
    }
    spend = read(values, caps)[CAPS]
    (budget,) = spend.budgets
    assert budget.spent_micro_usd == usd(40) and budget.total_micro_usd == usd(52.9) and budget.subjects == 3
    assert budget.top == (("team-a/batch", usd(40)), ("team-a/bot", usd(12.4)), ("team-a/cron", usd(0.5)))
    assert sp.spend_column(spend) == "$40.00/$50 day (top of 3 workloads)"


def test_a_cluster_policy_per_namespace_reads_every_namespace() -> None:
    org = cluster_policy("org", limits=[{"name": "ns", "usdPerMonth": 200, "per": "namespace"}])
    values = {
        key("ClusterModelPolicy/org/ns/namespace/team-a", "usd_month", MONTH): usd(20),
        key("ClusterModelPolicy/org/ns/namespace/team-b", "usd_month", MONTH): usd(75.25),
    }
    (budget,) = read(values, org)[ORG].budgets
    assert budget.top == (("team-b", usd(75.25)), ("team-a", usd(20)))
    assert sp.spend_column(read(values, org)[ORG]) == "$75.25/$200 month (top of 2 namespaces)"


def test_what_is_not_this_budgets_current_window_is_left_out() -> None:
    caps = policy("caps", limits=[{"name": "mine", "usdPerDay": 50}])
    values = {
        key("ModelPolicy/team-a/caps/mine/workload/team-a/bot", window="2026-03-30"): usd(49),  # yesterday, kept a day
        key("ModelPolicy/team-a/caps/mine/policy"): usd(30),  # the limit was `per: policy` before
        key("ModelPolicy/team-a/caps/other/workload/team-a/bot"): usd(30),  # a limit it no longer has
        key("ModelPolicy/team-b/caps/mine/workload/team-b/bot"): usd(30),  # another namespace's policy of that name
        key("ModelPolicy/team-a/caps/mine/workload/team-a/bot", "usd_month", MONTH): usd(30),  # it has no monthly
        "{other}:ModelPolicy/team-a/caps/mine/workload/team-a/bot/usd_day/2026-03-31": usd(30),  # another prefix
    }
    (budget,) = read(values, caps)[CAPS].budgets
    assert (budget.spent_micro_usd, budget.total_micro_usd, budget.subjects) == (0, 0, 0)
    assert sp.spend_column(read(values, caps)[CAPS]) == "$0.00/$50 day"


def test_a_policy_without_a_budget_has_no_spend() -> None:
    rates = policy("rates", limits=[{"name": "rpm", "requestsPerMinute": 60}])
    assert sp.budgets_of([rates]) == ()
    assert read({}, rates) == {}


def test_the_window_names_are_the_sidecars() -> None:
    from proxy.limits import algorithm

    assert algorithm.budget_window is sp.budget_window  # one function: they never disagree where a day ends
    assert sp.windows_at(NOW) == {"usd_day": DAY, "usd_month": MONTH}
    assert sp.windows_at(dt.datetime(2026, 4, 1, tzinfo=dt.UTC).timestamp() - 0.001) == {
        "usd_day": DAY,
        "usd_month": MONTH,
    }


# --- how it reads ------------------------------------------------------------------------


def spend_of(*budgets: sp.BudgetSpend, state: sp.SpendState = "read") -> sp.PolicySpend:
    return sp.PolicySpend(state=state, budgets=budgets, read_at=READ_AT)


def day(spent: float, budget: float = 50, *, per: str = "policy", subjects: int = 1) -> sp.BudgetSpend:
    return sp.BudgetSpend(
        limit="team",
        per=per,  # type: ignore[arg-type]
        measure="usd_day",
        window=DAY,
        budget_micro_usd=usd(budget),
        spent_micro_usd=usd(spent),
        total_micro_usd=usd(spent),
        subjects=subjects,
    )


@pytest.mark.parametrize(
    ("spend", "column"),
    [
        (spend_of(day(12.4)), "$12.40/$50 day"),
        (spend_of(day(0.004)), "$0.00/$50 day"),
        (spend_of(day(1234.567, 2000.5)), "$1,234.57/$2,000.50 day"),
        (spend_of(day(60)), "$60.00/$50 day"),  # overshoot is shown as it is
        (spend_of(day(12.4), state="unreachable"), "$12.40/$50 day (stale)"),
        (spend_of(state="unreachable"), "unknown (store unreachable)"),
        (sp.NO_STORE, "not shared (no limit store)"),
        (spend_of(*(day(1) for _ in range(5))), "$1.00/$50 day, $1.00/$50 day, $1.00/$50 day, +2 more"),
    ],
)
def test_the_spend_column(spend: sp.PolicySpend, column: str) -> None:
    assert sp.spend_column(spend) == column


# --- when a reading is written ---------------------------------------------------------------


def test_equal_numbers_are_never_written_again() -> None:
    assert not sp.worth_publishing(spend_of(day(12.4)), spend_of(day(12.4)), since_published=3600)


def test_a_cent_waits_a_minute_a_step_goes_at_once() -> None:
    now = spend_of(day(12.4))
    assert not sp.worth_publishing(now, spend_of(day(12.41)), since_published=15)
    assert sp.worth_publishing(now, spend_of(day(12.41)), since_published=60)
    assert not sp.worth_publishing(now, spend_of(day(12.404)), since_published=600)  # under a cent: not shown
    # a step is half a percent of the budget ($0.25 of $50): shown at once
    assert sp.worth_publishing(now, spend_of(day(12.65)), since_published=1)
    assert not sp.worth_publishing(now, spend_of(day(12.6)), since_published=1)


def test_a_budget_reached_a_new_window_or_state_goes_at_once() -> None:
    assert sp.worth_publishing(spend_of(day(49.99)), spend_of(day(50)), since_published=0)
    new_day = spend_of(sp.BudgetSpend(**{**_fields(day(12.4)), "window": "2026-04-01"}))
    assert sp.worth_publishing(spend_of(day(12.4)), new_day, since_published=0)
    assert sp.worth_publishing(spend_of(day(12.4)), spend_of(day(12.4), state="unreachable"), since_published=0)
    assert sp.worth_publishing(None, spend_of(day(12.4)), since_published=0)
    more = spend_of(day(12.4, per="workload", subjects=3))
    assert sp.worth_publishing(spend_of(day(12.4, per="workload", subjects=2)), more, since_published=0)


def _fields(budget: sp.BudgetSpend) -> dict[str, Any]:
    return {name: getattr(budget, name) for name in sp.BudgetSpend.__dataclass_fields__}


def test_unreachable_keeps_the_last_numbers_and_their_time() -> None:
    last = spend_of(day(12.4))
    down = sp.unreachable(last, "ConnectionError")
    assert down.budgets == last.budgets and down.read_at == READ_AT and down.state == "unreachable"
    assert sp.unreachable(None, "TimeoutError") == sp.PolicySpend(state="unreachable", problem="TimeoutError")


# --- the status written -----------------------------------------------------------------------


def _status(spend: sp.PolicySpend | None, *items: Any) -> dict[str, Any]:
    caps = policy("caps", limits=[{"name": "mine", "usdPerDay": 50}])
    view = resources(caps, *items)
    judgement = judge(view)
    desired = desired_statuses(judgement, {}, view, spend={CAPS: spend} if spend is not None else None)
    return render(desired[CAPS], None, "2026-03-31T15:30:00Z")


def test_the_status_carries_the_spend_and_says_where_it_comes_from() -> None:
    values = {
        key("ModelPolicy/team-a/caps/mine/workload/team-a/bot"): usd(12.4),
        key("ModelPolicy/team-a/caps/mine/workload/team-a/batch"): usd(3),
    }
    spend = read(values, policy("caps", limits=[{"name": "mine", "usdPerDay": 50}]))[CAPS]
    status = _status(spend)
    assert status["spend"] == {
        "summary": "$12.40/$50 day (top of 2 workloads)",
        "readAt": READ_AT,
        "budgets": [
            {
                "limit": "mine",
                "per": "workload",
                "window": "day",
                "period": DAY,
                "budgetUSD": 50.0,
                "spentUSD": 12.4,
                "totalUSD": 15.4,
                "subjects": 2,
                "top": [{"subject": "team-a/bot", "spentUSD": 12.4}, {"subject": "team-a/batch", "spentUSD": 3.0}],
            }
        ],
    }
    reported = {c["type"]: c for c in status["conditions"]}["SpendReported"]
    assert (reported["status"], reported["reason"]) == ("True", "Read")
    assert timeless(_status(spend)) == timeless(status)  # the same reading is no write


def test_without_a_store_status_says_spend_is_not_shared() -> None:
    status = _status(sp.NO_STORE)
    assert status["spend"] == {"summary": "not shared (no limit store)", "budgets": []}  # no numbers invented
    reported = {c["type"]: c for c in status["conditions"]}["SpendReported"]
    assert (reported["status"], reported["reason"]) == ("False", "NoLimitStore")
    assert "--limits-redis-url" in reported["message"]


def test_an_unreachable_store_is_a_condition_and_the_old_numbers_stay() -> None:
    status = _status(sp.unreachable(spend_of(day(12.4)), "ConnectionError"))
    assert status["spend"]["summary"] == "$12.40/$50 day (stale)" and status["spend"]["readAt"] == READ_AT
    reported = {c["type"]: c for c in status["conditions"]}["SpendReported"]
    assert (reported["status"], reported["reason"]) == ("False", "StoreUnreachable")
    assert READ_AT in reported["message"] and "ConnectionError" in reported["message"]


def test_the_stores_state_is_no_event_on_every_budgeted_policy() -> None:
    before = _status(spend_of(day(12.4)))
    down = _wanted(sp.unreachable(spend_of(day(12.4)), "ConnectionError"))
    assert condition_events(before, down) == []  # logged once by the reader instead
    assert condition_events(None, _wanted(sp.NO_STORE)) == []


def _wanted(spend: sp.PolicySpend) -> tuple[Wanted, ...]:
    view = resources(policy("caps", limits=[{"name": "mine", "usdPerDay": 50}]))
    return desired_statuses(judge(view), {}, view, spend={CAPS: spend})[CAPS].conditions


def test_a_policy_without_spend_has_neither_field_nor_condition() -> None:
    status = _status(None)
    assert "spend" not in status
    assert [c["type"] for c in status["conditions"]] == ["Accepted", "ResolvedRefs"]


# --- the CRDs show it ---------------------------------------------------------------------------


@pytest.mark.parametrize("crd", ["modelway.io_modelpolicies.yaml", "modelway.io_clustermodelpolicies.yaml"])
@pytest.mark.parametrize("folder", ["crds", "charts/modelway/crds"])
def test_kubectl_get_shows_a_spend_column_the_status_schema_keeps(crd: str, folder: str) -> None:
    version = yaml.safe_load((REPO / folder / crd).read_text())["spec"]["versions"][0]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Spend"]["jsonPath"] == ".status.spend.summary" and columns["Spend"]["type"] == "string"
    schema = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["spend"]
    values = {key("ModelPolicy/team-a/caps/mine/workload/team-a/bot"): usd(12.4)}
    written = _status(read(values, policy("caps", limits=[{"name": "mine", "usdPerDay": 50}]))[CAPS])["spend"]
    _fits(written, schema, "status.spend")  # a field the schema lacks would be pruned by the API server


def _fits(value: Any, schema: dict[str, Any], path: str) -> None:
    if isinstance(value, dict):
        for name, item in value.items():
            assert name in schema.get("properties", {}), f"{path}.{name} is not in the CRD's status schema"
            _fits(item, schema["properties"][name], f"{path}.{name}")
    elif isinstance(value, list):
        for item in value:
            _fits(item, schema["items"], f"{path}[]")
