"""`redact` in residency rules: the API's checks, the controller's compile, and the sidecar's table.

No sockets: policy objects -> controller.compile -> the snapshot's `redacted_backends` -> the
sidecar's `RedactionTable`, as a sidecar would build it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from controller.api import InvalidObject, parse_object
from controller.compile import Workload, compile_workload, judge
from controller.status import desired_statuses
from controller.store import ResourceStore
from proxy.policy.personal_data import ALL_KINDS
from proxy.redaction.table import RedactionTable
from proxy.routing.table import RoutingTable
from proxy.snapshot import (
    REDACTION_KINDS,
    ConfigProblem,
    Redaction,
    RedactionPattern,
    check_redaction_regex,
    merge_redactions,
)
from tests.unit.test_policy_compile import EU_SAAS, IN_CLUSTER, US_SAAS, chat_route, reachable
from tests.unit.test_policy_compile import policy as model_policy


def _policy_object(name: str, residency: list[dict[str, Any]], *, generation: int = 1) -> dict[str, Any]:
    return {
        "kind": "ModelPolicy",
        "metadata": {"name": name, "namespace": "team-a", "uid": f"uid-{name}", "generation": generation},
        "spec": {"residency": residency},
    }


def _snapshot(*policies: Any):
    store = ResourceStore()
    for item in (EU_SAAS, US_SAAS, IN_CLUSTER, chat_route(), *policies):
        store.apply(item)
    judgement = judge(store.view())
    return judgement, compile_workload(judgement, Workload("team-a"))


EU_REDACT = {"dataClass": "personal", "jurisdictions": ["eu"], "redact": {"kinds": ["email", "phone"]}}


def test_the_built_in_kinds_are_the_scans_own() -> None:
    assert REDACTION_KINDS == ALL_KINDS


def test_a_redacting_rule_keeps_the_backend_for_its_class_and_lists_it_with_its_rule() -> None:
    _, snapshot = _snapshot(model_policy("eu-mask", residency=[EU_REDACT]))
    table = RoutingTable.build(snapshot)
    # not denied: every backend still reachable for personal data...
    assert reachable(table, "personal") == {"team-a.openai-us", "team-a.openai-eu", "team-a.vllm"}
    assert snapshot.policy.denied_backends == ()
    # ...but the one outside the EU only masked, for personal and restricted
    (redacted,) = snapshot.policy.redacted_backends
    assert (redacted.key, redacted.data_classes, redacted.policy) == (
        "team-a.openai-us/gpt-4o",
        ("personal", "restricted"),
        "ModelPolicy team-a/eu-mask",
    )
    assert redacted.redaction == Redaction(kinds=("email", "phone"))
    rules = RedactionTable.build(snapshot.policy)
    assert rules.rule_for("team-a.openai-us/gpt-4o", "internal") is None
    assert rules.rule_for("team-a.openai-eu/gpt-4o", "personal") is None
    rule = rules.rule_for("team-a.openai-us/gpt-4o", "restricted")
    assert rule is not None and rule.rule.kinds == ("email", "phone") and rule.rule.restore


def test_a_deny_rule_for_a_higher_class_still_denies_that_class() -> None:
    residency = [EU_REDACT, {"dataClass": "restricted", "jurisdictions": ["eu"]}]
    _, snapshot = _snapshot(model_policy("eu", residency=residency))
    table = RoutingTable.build(snapshot)
    assert "team-a.openai-us" in reachable(table, "personal")
    assert "team-a.openai-us" not in reachable(table, "restricted")
    (redacted,) = snapshot.policy.redacted_backends
    assert redacted.data_classes == ("personal",)


def test_policies_redacting_one_backend_merge_to_the_strictest() -> None:
    other = {
        "dataClass": "internal",
        "jurisdictions": ["eu"],
        "redact": {"kinds": ["iban"], "patterns": [{"name": "employee_id", "regex": "EMP-[0-9]{6}"}], "restore": False},
    }
    _, snapshot = _snapshot(model_policy("a", residency=[EU_REDACT]), model_policy("b", residency=[other]))
    rules = RedactionTable.build(snapshot.policy)
    internal = rules.rule_for("team-a.openai-us/gpt-4o", "internal")
    personal = rules.rule_for("team-a.openai-us/gpt-4o", "personal")
    assert internal is not None and personal is not None
    assert internal.rule.kinds == ("iban",) and internal.policies == ("ModelPolicy team-a/b",)
    assert personal.rule.kinds == ("email", "phone", "iban")
    assert personal.rule.custom_names == ("employee_id",)
    assert personal.rule.restore is False  # one says the app must not see the values
    assert set(personal.policies) == {"ModelPolicy team-a/a", "ModelPolicy team-a/b"}


def test_merging_two_patterns_of_one_name_masks_what_either_matches() -> None:
    merged = merge_redactions(
        [
            Redaction(kinds=(), patterns=(RedactionPattern(name="ticket", regex="T-[0-9]{4}"),)),
            Redaction(kinds=None, patterns=(RedactionPattern(name="ticket", regex="JIRA-[0-9]{3}"),)),
        ]
    )
    assert merged.kinds is None
    (pattern,) = merged.patterns

    assert re.findall(pattern.regex, "T-1234 JIRA-567") == ["T-1234", "JIRA-567"]


@pytest.mark.parametrize(
    ("regex", "says"),
    [
        ("(EMP", "does not compile"),
        ("[0-9]*", "matches the empty string"),
        ("(a+)+b", "repeats a repetition"),
        (r"(\w*\s?)*@", "repeats a repetition"),
    ],
)
def test_a_bad_custom_regex_makes_the_policy_accepted_false_naming_the_pattern(regex: str, says: str) -> None:
    bad = _policy_object(
        "masks",
        [{"dataClass": "personal", "jurisdictions": ["eu"], "redact": {"patterns": [{"name": "emp", "regex": regex}]}}],
    )
    parsed = parse_object(bad)
    assert isinstance(parsed, InvalidObject)
    store = ResourceStore()
    for item in (EU_SAAS, US_SAAS, IN_CLUSTER, chat_route()):
        store.apply(item)
    store.mark_invalid(parsed)
    judgement = judge(store.view())
    status = desired_statuses(judgement, {}, store.view())[("ModelPolicy", "team-a", "masks")]
    accepted = {c.type: c for c in status.conditions}["Accepted"]
    assert (accepted.status, accepted.reason) == ("False", "InvalidRegex")
    assert "redact pattern 'emp'" in accepted.message and says in accepted.message


@pytest.mark.parametrize("regex", ["EMP-[0-9]{6}", r"(?:[a-z]++\.)+com", "(ab){1,3}x", r"\b[A-Z]{2}[0-9]{7}\b"])
def test_ordinary_patterns_pass(regex: str) -> None:
    assert check_redaction_regex("p", regex) == regex


def test_a_pattern_named_like_a_built_in_kind_is_refused() -> None:
    bad = _policy_object(
        "masks",
        [{"dataClass": "personal", "jurisdictions": ["eu"], "redact": {"patterns": [{"name": "email", "regex": "x"}]}}],
    )
    parsed = parse_object(bad)
    assert isinstance(parsed, InvalidObject) and "built-in kind" in parsed.message


def test_redact_that_masks_nothing_is_refused() -> None:
    bad = _policy_object("masks", [{"dataClass": "personal", "jurisdictions": ["eu"], "redact": {"kinds": []}}])
    parsed = parse_object(bad)
    assert isinstance(parsed, InvalidObject) and "masks nothing" in parsed.message


def test_the_sidecar_refuses_a_snapshot_pattern_the_controller_would_refuse() -> None:
    with pytest.raises(ConfigProblem):
        check_redaction_regex("emp", "(x+)*y")
    with pytest.raises(ValueError, match="repeats a repetition"):
        RedactionPattern(name="emp", regex="(x+)*y")


def test_route_status_says_which_backend_is_masked() -> None:
    judgement, _ = _snapshot(model_policy("eu-mask", residency=[EU_REDACT]))
    notes = judgement.restrictions.get(("ModelRoute", "team-a", "chat"), ())
    assert any("masks personal data sent to openai-us/gpt-4o" in note for note in notes)
