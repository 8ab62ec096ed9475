"""Durations as Kubernetes users write them, one grammar in controller.api and in the CRDs' CEL rules.

The tables here are also fed to the real apiserver (tests/e2e/test_crds.py), so
kubectl, `modelway dev` and the compiler accept and refuse the same strings and
agree on their length in seconds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from controller import api
from controller.api import duration_seconds

REPO = Path(__file__).resolve().parents[2]

# Go's time.ParseDuration gives the same numbers (the e2e test checks the apiserver agrees).
DURATIONS: dict[str, float] = {
    "300ms": 0.3,
    "1.5s": 1.5,
    "1m30s": 90.0,
    "2h": 7200.0,
    "1h2m3.5s": 3723.5,
    "100ms": 0.1,
    "120s": 120.0,
    ".5s": 0.5,
    "0.25s": 0.25,
    "1.5h": 5400.0,
    "1m0.5s": 60.5,
    "1500us": 0.0015,
    "2500ns": 0.0000025,
    "90m": 5400.0,
    "1s500ms": 1.5,  # Go allows any order, and a unit twice
    "0": 0.0,
    "0s": 0.0,
    "99999h": 359_996_400.0,
    "1.123456789s": 1.123456789,
    "1h1m1s1ms1us1ns": 3661.001001001,
}

NOT_DURATIONS: list[str] = [
    "10 seconds",  # words
    "10",  # no unit (only "0" may go without)
    "1.5",
    "s",
    "1d",  # Go has no days
    "1S",  # units are lower case
    "1 s",
    " 1s",
    "1s ",
    "1s\n",
    "-1s",  # no negative durations
    "+1s",
    "",
    "00",
    "1e3s",
    "123456s",  # at most 5 digits before the point
    "1.1234567890s",  # and 9 after it
    "1.s",
    "1µs",  # us, not µs
    "1h1m1s1ms1us1ns1h1m",  # at most 7 parts
    "1" * 40 + "s",
]


@pytest.mark.parametrize(("text", "seconds"), DURATIONS.items(), ids=list(DURATIONS))
def test_go_durations_parse_to_their_seconds(text: str, seconds: float) -> None:
    assert duration_seconds(text) == pytest.approx(seconds, abs=1e-12)


@pytest.mark.parametrize("text", NOT_DURATIONS, ids=[repr(t) for t in NOT_DURATIONS])
def test_anything_else_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape("is not a duration: write numbers with units, e.g. 300ms, 1.5s")):
        duration_seconds(text)


def test_a_long_value_is_cut_in_the_message() -> None:
    with pytest.raises(ValueError) as caught:
        duration_seconds("9" * 5000)
    assert len(str(caught.value)) < 200


def _route(**rule: Any) -> dict[str, Any]:
    return {
        "kind": "ModelRoute",
        "metadata": {"name": "r"},
        "spec": {"model": "m", "rules": [{"backends": [{"provider": "p", "model": "x"}], **rule}]},
    }


def test_the_route_model_takes_go_durations() -> None:
    route = api.parse_resource(
        _route(
            timeouts={"total": "1h2m3.5s", "firstToken": "1.5s", "connect": "300ms"},
            retry={"backoffBase": "0", "backoffMax": "1m30s", "maxRetryAfter": "2h"},
        )
    )
    assert isinstance(route, api.ModelRoute)
    rule = route.spec.rules[0]
    assert [
        duration_seconds(d) for d in (rule.timeouts.total, rule.timeouts.first_token or "", rule.timeouts.connect)
    ] == [3723.5, 1.5, 0.3]
    assert [
        duration_seconds(d) for d in (rule.retry.backoff_base, rule.retry.backoff_max, rule.retry.max_retry_after)
    ] == [0.0, 90.0, 7200.0]


@pytest.mark.parametrize(("rule", "message"), [
    ({"timeouts": {"total": "10 seconds"}}, "'10 seconds' is not a duration"),
    ({"timeouts": {"connect": "0s"}}, "connect must be longer than 0, not 0s"),
    ({"timeouts": {"total": "30s", "firstToken": "1m"}}, "firstToken (1m) must not be longer than total (30s)"),
    ({"retry": {"backoffBase": "3s", "backoffMax": "500ms"}},
     "backoffMax (500ms) must not be shorter than backoffBase (3s)"),
])  # fmt: skip
def test_the_route_model_refuses_bad_durations_as_the_apiserver_does(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        api.parse_resource(_route(**rule))
    assert message in str(caught.value)


# --- the CRDs use the very same grammar ---------------------------------------------


def _duration_fields(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        for name, prop in node.get("properties", {}).items():
            here = f"{path}.{name}"
            if isinstance(prop, dict) and "duration" in prop.get("description", "") and prop.get("type") == "string":
                found.append((here, prop))
            found += _duration_fields(prop, here)
        if "items" in node:
            found += _duration_fields(node["items"], f"{path}[]")
    return found


def _route_crd() -> dict[str, Any]:
    return yaml.safe_load((REPO / "crds" / "modelway.io_modelroutes.yaml").read_text())


def test_every_duration_field_of_the_crd_checks_the_grammar_with_cel() -> None:
    schema = _route_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    fields = _duration_fields(schema)
    assert sorted(p for p, _ in fields) == sorted(
        f".spec.rules[].{f}"
        for f in (
            "retry.backoffBase",
            "retry.backoffMax",
            "retry.maxRetryAfter",
            "timeouts.total",
            "timeouts.firstToken",
            "timeouts.connect",
            "experiment.maxDuration",
            "experiment.rollout.pause",
        )
    )
    for path, prop in fields:
        assert "pattern" not in prop, f"{path}: the CEL rule says it in words; a pattern would print the regex"
        assert prop["maxLength"] == api.DURATION_MAX_LENGTH, path
        first = prop["x-kubernetes-validations"][0]
        assert first["rule"] == f"self.matches('{api.DURATION_PATTERN}')", path
        assert "is not a duration" in first["messageExpression"], path


def test_the_regexes_of_the_crd_cel_rules_are_api_py_s() -> None:
    text = (REPO / "crds" / "modelway.io_modelroutes.yaml").read_text()
    regexes = set(re.findall(r"matches\('([^']*)'\)", text))
    assert regexes == {api.DURATION_PATTERN, api.DNS_LABEL}
    assert text.count(api.DURATION_PATTERN) == 8 + 2 + 2 + 5  # each field, the two object rules, five "> 0"


def test_the_grammar_is_re2_safe_and_python_and_go_read_it_alike() -> None:
    # No backslashes (CEL string escapes) and no constructs RE2 lacks (lookaround, backreferences).
    assert "\\" not in api.DURATION_PATTERN
    assert "(?" not in api.DURATION_PATTERN
    assert api.DURATION_PATTERN.startswith("^") and api.DURATION_PATTERN.endswith("$")
