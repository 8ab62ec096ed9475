"""Status conditions computed from hand-built judgements: no API server, no sockets."""

from __future__ import annotations

from controller.compile import Judgement, RouteVerdict, Verdict
from controller.compile_provider import ACCEPTED, RESOLVED, ProviderVerdict
from controller.core import RouteSync
from controller.status import Wanted, condition_events, desired_statuses, programmed, render, route_status, timeless
from controller.store import Resources
from tests.unit.status_support import KEY, MISSING, PKEY, T0, T1, by_type, good, provider, route

# --- Programmed ---------------------------------------------------------------------------


def test_programmed_when_every_sidecar_runs_the_current_generation() -> None:
    condition, synced = programmed(good(4), RouteSync(synced=3, total=3))
    assert condition == Wanted("Programmed", "True", "Programmed", "3/3 sidecars run generation 4")
    assert synced == 3


def test_pending_while_some_sidecars_lag() -> None:
    condition, synced = programmed(good(4), RouteSync(synced=1, total=3))
    assert (condition.status, condition.reason, condition.message) == (
        "False",
        "Pending",
        "1/3 sidecars run generation 4",
    )
    assert synced == 1


def test_no_sidecars_is_programmed() -> None:
    condition, synced = programmed(good(1), RouteSync(0, 0))
    assert (condition.status, condition.reason, synced) == ("True", "Programmed", 0)
    assert condition.message.startswith("0/0 sidecars run generation 1")


def test_a_broken_edit_says_which_generation_the_sidecars_keep() -> None:
    verdict = RouteVerdict(ACCEPTED, MISSING, 5, route(4))  # generation 5 is broken, 4 is served
    condition, synced = programmed(verdict, RouteSync(3, 3))
    assert (condition.status, condition.reason) == ("False", "Invalid")
    assert condition.message == f"sidecars keep generation 4: BackendNotFound: {MISSING.message}"
    assert synced == 0  # nobody runs generation 5


def test_a_broken_edit_is_noticed_even_when_generations_do_not_move() -> None:
    # The file source has no generations: every version is 1. The verdicts still tell.
    condition, _ = programmed(RouteVerdict(ACCEPTED, MISSING, 1, route(1)), RouteSync(1, 1))
    assert (condition.status, condition.reason) == ("False", "Invalid")


def test_nothing_to_serve_is_invalid() -> None:
    conflicted = Verdict(False, "Conflicted", "ModelRoute other already serves model 'chat'")
    condition, synced = programmed(RouteVerdict(conflicted, RESOLVED, 1, None), RouteSync(0, 2))
    assert (condition.status, condition.reason, synced) == ("False", "Invalid", 0)
    assert "Conflicted: ModelRoute other already serves" in condition.message


# --- the whole status ---------------------------------------------------------------------


def test_route_status_fields() -> None:
    body = render(route_status(KEY, good(4), RouteSync(2, 3)), None, T0)
    assert (body["observedGeneration"], body["syncedSidecars"], body["totalSidecars"]) == (4, 2, 3)
    conditions = by_type(body)
    assert list(conditions) == ["Accepted", "ResolvedRefs", "Programmed"]
    assert all(c["observedGeneration"] == 4 and c["lastTransitionTime"] == T0 for c in conditions.values())
    assert conditions["ResolvedRefs"]["reason"] == "ResolvedRefs"


def test_last_transition_time_holds_while_the_status_does() -> None:
    first = render(route_status(KEY, good(4), RouteSync(3, 3)), None, T0)
    # Generation 5, still fine: messages and observedGeneration move, the times do not.
    second = render(route_status(KEY, good(5), RouteSync(3, 3)), first, T1)
    assert {c["lastTransitionTime"] for c in second["conditions"]} == {T0}
    assert by_type(second)["Programmed"]["message"] == "3/3 sidecars run generation 5"
    # ResolvedRefs turns False: only its time (and Programmed's) moves.
    third = render(route_status(KEY, RouteVerdict(ACCEPTED, MISSING, 6, route(5)), RouteSync(3, 3)), second, T1)
    times = {t: c["lastTransitionTime"] for t, c in by_type(third).items()}
    assert times == {"Accepted": T0, "ResolvedRefs": T1, "Programmed": T1}


def test_times_are_kept_from_the_object_on_first_sight() -> None:
    on_server = {
        "observedGeneration": 4,
        "conditions": [
            {
                "type": "Accepted",
                "status": "True",
                "reason": "Accepted",
                "message": "",
                "observedGeneration": 4,
                "lastTransitionTime": T0,
            }
        ],
    }
    body = render(route_status(KEY, good(4), RouteSync(0, 0)), on_server, T1)
    assert by_type(body)["Accepted"]["lastTransitionTime"] == T0
    assert by_type(body)["Programmed"]["lastTransitionTime"] == T1


def test_only_times_differing_is_nothing_to_write() -> None:
    desired = route_status(KEY, good(4), RouteSync(3, 3))
    assert timeless(render(desired, None, T0)) == timeless(render(desired, None, T1))
    assert timeless(render(desired, None, T0)) != timeless(
        render(route_status(KEY, good(4), RouteSync(2, 3)), None, T0)
    )


def test_desired_statuses_cover_what_the_store_holds() -> None:
    judgement = Judgement(
        providers={PKEY: ProviderVerdict(ACCEPTED, RESOLVED, None)},
        routes={KEY: good(4), ("ModelRoute", "default", "gone"): good(1)},
    )
    resources = Resources(providers=(provider(generation=7),), routes=(route(4),))
    desired = desired_statuses(judgement, {KEY: RouteSync(1, 1)}, resources)
    assert set(desired) == {KEY, PKEY}  # "gone" was deleted after the judgement: nothing to write
    assert (desired[PKEY].generation, desired[PKEY].uid) == (7, "uid-p")
    assert [c.type for c in desired[PKEY].conditions] == ["Accepted", "ResolvedRefs"]
    assert (desired[KEY].synced, desired[KEY].total, desired[KEY].uid) == (1, 1, "uid-chat")
    assert "syncedSidecars" not in render(desired[PKEY], None, T0)


# --- Events -------------------------------------------------------------------------------


def test_events_for_a_new_object() -> None:
    conditions = route_status(KEY, RouteVerdict(ACCEPTED, MISSING, 1, None), RouteSync(0, 0)).conditions
    events = condition_events(None, conditions)
    assert [(e.type, e.reason) for e in events] == [("Warning", "BackendNotFound"), ("Warning", "Invalid")]
    assert events[0].note == MISSING.message


def test_a_new_object_that_is_fine_gets_one_event_when_its_sidecars_run_it() -> None:
    pending = route_status(KEY, good(1), RouteSync(1, 3))
    assert condition_events(None, pending.conditions, generation=1) == []  # Accepted, ResolvedRefs, Pending: quiet
    rendered = render(pending, None, T0)
    events = condition_events(rendered, route_status(KEY, good(1), RouteSync(3, 3)).conditions, generation=1)
    assert [(e.type, e.reason, e.note) for e in events] == [("Normal", "Programmed", "3/3 sidecars run generation 1")]


def test_a_new_route_no_sidecar_runs_gets_no_event_until_an_edit_or_a_fix() -> None:
    # A fresh leader over routes in namespaces without sidecars: "0/0 sidecars run generation 1" is no news.
    alone = route_status(KEY, good(1), RouteSync(0, 0))
    assert condition_events(None, alone.conditions, generation=1, sidecars=0) == []
    # The same route where sidecars run it: the one Event saying it reached them.
    served = route_status(KEY, good(1), RouteSync(2, 2))
    events = condition_events(None, served.conditions, generation=1, sidecars=2)
    assert [(e.type, e.reason, e.note) for e in events] == [("Normal", "Programmed", "2/2 sidecars run generation 1")]
    # Its edit is still news (the user's change is taken in), and so is a problem, sidecars or none.
    rendered = render(alone, None, T0)
    edited = route_status(KEY, good(2), RouteSync(0, 0))
    events = condition_events(rendered, edited.conditions, generation=2, sidecars=0)
    assert [(e.type, e.reason) for e in events] == [("Normal", "Programmed")]
    broken = route_status(KEY, RouteVerdict(ACCEPTED, MISSING, 1, None), RouteSync(0, 0))
    events = condition_events(None, broken.conditions, generation=1, sidecars=0)
    assert [(e.type, e.reason) for e in events] == [("Warning", "BackendNotFound"), ("Warning", "Invalid")]


def test_events_only_for_transitions() -> None:
    fine = render(route_status(KEY, good(4), RouteSync(3, 3)), None, T0)
    # Unchanged (same generation, new counts in the message): no Events at all.
    assert condition_events(fine, route_status(KEY, good(4), RouteSync(3, 3)).conditions, generation=4) == []
    # A new generation on every sidecar: one Normal Event saying so.
    events = condition_events(fine, route_status(KEY, good(5), RouteSync(3, 3)).conditions, generation=5)
    assert [(e.type, e.reason, e.note) for e in events] == [("Normal", "Programmed", "3/3 sidecars run generation 5")]
    # ResolvedRefs turns False: a Warning for it, and for Programmed, nothing for Accepted.
    broken = route_status(KEY, RouteVerdict(ACCEPTED, MISSING, 5, route(4)), RouteSync(3, 3))
    events = condition_events(fine, broken.conditions)
    assert [(e.type, e.reason, e.action) for e in events] == [
        ("Warning", "BackendNotFound", "ResolveRefs"),
        ("Warning", "Invalid", "Program"),
    ]
    # Still broken the same way: quiet.
    rendered = render(broken, fine, T1)
    assert condition_events(rendered, broken.conditions) == []
    # A different problem while False: warn again.
    other = Verdict(False, "InvalidBackend", "ModelProvider openai is not usable")
    events = condition_events(
        rendered, route_status(KEY, RouteVerdict(ACCEPTED, other, 5, route(4)), RouteSync(3, 3)).conditions
    )
    assert [(e.type, e.reason) for e in events] == [("Warning", "InvalidBackend")]
    # Fixed: Normal Events for what turned True.
    events = condition_events(rendered, route_status(KEY, good(6), RouteSync(3, 3)).conditions)
    assert [(e.type, e.reason) for e in events] == [("Normal", "ResolvedRefs"), ("Normal", "Programmed")]


def test_pending_is_one_warning_not_one_per_count() -> None:
    pending = render(route_status(KEY, good(4), RouteSync(1, 3)), None, T0)
    assert condition_events(pending, route_status(KEY, good(4), RouteSync(2, 3)).conditions) == []


def test_a_sidecar_refusal_is_programmed_false_with_its_words() -> None:
    status = route_status(
        KEY,
        good(4),
        RouteSync(1, 3, rejected=2, rejection="web-1: providers.0.surprise: Extra inputs are not permitted"),
    )
    programmed = {c.type: c for c in status.conditions}["Programmed"]
    assert (programmed.status, programmed.reason) == ("False", "SidecarRejected")
    assert "2/3 sidecars refused" in programmed.message and "Extra inputs are not permitted" in programmed.message
    events = condition_events(render(route_status(KEY, good(4), RouteSync(3, 3)), None, T0), status.conditions)
    assert [(e.type, e.reason) for e in events] == [("Warning", "SidecarRejected")]
