"""A bad object never costs a good one: the shared checks, invalid objects kept beside their last
valid version, and what judgement and status say of them (pure, no sockets)."""

from __future__ import annotations

import base64

import pytest

from controller.api import InvalidObject, parse_object
from controller.compile import Workload, compile_workload, judge
from controller.status import NO_SYNC, desired_statuses, route_status
from controller.store import ResourceStore
from proxy.snapshot import ConfigProblem, Provider, check_base_url, check_regex


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://", "has no host"),
        ("http://llm.internal:99999/v1", "Port out of range"),
        ("http://[::1/v1", "Invalid IPv6 URL"),
        ("http://llm.internal:0/v1", "port 0"),
        ("http://llm.internal:abc/v1", "not a usable URL"),
        ("https://user:hunter2@llm.internal/v1", "must not carry credentials"),
        ("https://llm.internal/v1?api-version=1", "query or fragment"),
        ("https://llm.internal/v1#x", "query or fragment"),
        ("https://llm.internal /v1", "whitespace or control"),
        ("ftp://llm.internal/v1", "http:// or https://"),
        ("https://llm.bücher.example/v1", "not ASCII"),
    ],
)
def test_unusable_base_urls_are_refused_naming_why(url: str, says: str) -> None:
    with pytest.raises(ConfigProblem) as caught:
        check_base_url(url)
    assert caught.value.reason == "InvalidURL"
    assert says in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.com/v1",
        "http://127.0.0.1:8080/v1",
        "http://[::1]:8080",
        "http://vllm.models.svc.cluster.local:8000/v1/",
    ],
)
def test_usable_base_urls_pass(url: str) -> None:
    assert check_base_url(url) == url


def test_the_sidecar_refuses_what_the_controller_refuses() -> None:
    with pytest.raises(ConfigProblem, match="Port out of range"):
        Provider(name="p", type="openai", base_url="http://llm.internal:99999/v1")
    with pytest.raises(ConfigProblem, match="does not compile"):
        check_regex("(beta")


def test_a_long_bad_value_is_quoted_short() -> None:
    with pytest.raises(ConfigProblem) as caught:
        check_regex("(" + "a" * 100_000)
    assert len(str(caught.value)) < 300


def _route(regex: str | None = None, *, generation: int = 1, model: str = "chat") -> dict:
    match = {"matches": {"headers": [{"name": "x-tier", "regex": regex}]}} if regex is not None else {}
    rules = [{"name": "beta", **match, "backends": [{"provider": "openai", "model": "gpt-4o"}]}]
    if regex is not None:
        rules.append({"name": "default", "backends": [{"provider": "openai", "model": "gpt-4o-mini"}]})
    return {
        "kind": "ModelRoute",
        "metadata": {"name": "chat", "namespace": "team-a", "generation": generation, "uid": "uid-chat"},
        "spec": {"model": model, "rules": rules},
    }


def _provider(base_url: str, *, generation: int = 1) -> dict:
    return {
        "kind": "ModelProvider",
        "metadata": {"name": "openai", "namespace": "team-a", "generation": generation},
        "spec": {"type": "openai", "baseURL": base_url, "credentialsRef": {"name": "keys"}},
    }


def _secret() -> dict:
    return {
        "kind": "Secret",
        "metadata": {"name": "keys", "namespace": "team-a"},
        "data": {"apiKey": base64.b64encode(b"sk-a").decode()},
    }


def test_a_bad_regex_is_an_invalid_object_with_its_reason_and_field() -> None:
    parsed = parse_object(_route("(beta"))
    assert isinstance(parsed, InvalidObject)
    assert parsed.reason == "InvalidRegex"
    assert "spec.rules.0.matches.headers.0.regex" in parsed.message
    assert "does not compile" in parsed.message
    assert "at least 1 item" not in parsed.message  # no second, misleading clause
    assert parsed.metadata.generation == 1


def test_a_bad_port_is_an_invalid_object() -> None:
    parsed = parse_object(_provider("http://llm.internal:99999/v1"))
    assert isinstance(parsed, InvalidObject) and parsed.reason == "InvalidURL"
    assert "spec.baseURL" in parsed.message or "spec.base_url" in parsed.message


def _store(*objects: dict) -> ResourceStore:
    store = ResourceStore()
    for obj in objects:
        parsed = parse_object(obj)
        if isinstance(parsed, InvalidObject):
            store.mark_invalid(parsed)
        else:
            store.apply(parsed)
    return store


def test_a_route_edited_to_a_bad_regex_keeps_serving_its_last_valid_rules() -> None:
    store = _store(
        _provider("https://api.openai.com/v1"), _secret(), _route("^beta$", generation=1), _route("(beta", generation=2)
    )
    judgement = judge(store.view())
    snapshot = compile_workload(judgement, Workload("team-a"))
    assert [r.match_headers[0].regex for r in snapshot.routes[0].rules[:1]] == ["^beta$"]  # generation 1 serves
    verdict = judgement.routes[("ModelRoute", "team-a", "chat")]
    assert (verdict.accepted.ok, verdict.accepted.reason, verdict.generation) == (False, "InvalidRegex", 2)
    assert "keep its last valid version (generation 1)" in verdict.accepted.message
    status = route_status(("ModelRoute", "team-a", "chat"), verdict, NO_SYNC)
    assert status.generation == 2  # every condition speaks of the current generation
    programmed = {c.type: c for c in status.conditions}["Programmed"]
    assert programmed.status == "False" and "sidecars keep generation 1" in programmed.message


def test_a_new_route_with_a_bad_regex_gets_a_status_and_serves_nothing() -> None:
    store = _store(_provider("https://api.openai.com/v1"), _secret(), _route("(beta", generation=1))
    judgement = judge(store.view())
    assert compile_workload(judgement, Workload("team-a")).routes == ()
    desired = desired_statuses(judgement, {}, store.view())
    status = desired[("ModelRoute", "team-a", "chat")]
    accepted = {c.type: c for c in status.conditions}["Accepted"]
    assert (accepted.status, accepted.reason, status.uid) == ("False", "InvalidRegex", "uid-chat")


def test_fixing_the_route_clears_the_invalid_mark() -> None:
    store = _store(
        _provider("https://api.openai.com/v1"), _secret(), _route("(beta", generation=1), _route("^beta$", generation=2)
    )
    assert store.view().invalid == ()
    assert judge(store.view()).routes[("ModelRoute", "team-a", "chat")].accepted.ok


def test_a_provider_with_a_bad_port_is_refused_and_costs_no_other_route() -> None:
    other = _route(model="other") | {"metadata": {"name": "other", "namespace": "team-a"}}
    other["spec"]["rules"][0]["backends"] = [{"provider": "good", "model": "m"}]
    good = _provider("https://good.example/v1") | {"metadata": {"name": "good", "namespace": "team-a"}}
    store = _store(good, _secret(), other, _provider("http://llm.internal:99999/v1"), _route())
    judgement = judge(store.view())
    verdict = judgement.providers[("ModelProvider", "team-a", "openai")]
    assert (verdict.accepted.ok, verdict.accepted.reason, verdict.provider) == (False, "InvalidURL", None)
    snapshot = compile_workload(judgement, Workload("team-a"))
    assert [r.model for r in snapshot.routes] == ["other"]  # valid for any sidecar
    assert not judgement.routes[("ModelRoute", "team-a", "chat")].resolved_refs.ok


def test_a_provider_edited_to_a_bad_port_keeps_its_last_valid_settings() -> None:
    store = _store(
        _provider("https://api.openai.com/v1"),
        _secret(),
        _route(),
        _provider("http://llm.internal:99999/v1", generation=2),
    )
    judgement = judge(store.view())
    verdict = judgement.providers[("ModelProvider", "team-a", "openai")]
    assert not verdict.accepted.ok and "generation 1" in verdict.accepted.message
    snapshot = compile_workload(judgement, Workload("team-a"))
    assert [p.base_url for p in snapshot.providers] == ["https://api.openai.com/v1"]


def test_deleting_an_invalid_object_forgets_both_versions() -> None:
    store = _store(_provider("https://api.openai.com/v1"), _secret(), _route("^beta$"), _route("(beta", generation=2))
    store.delete("ModelRoute", "team-a", "chat")
    assert store.view().routes == () and store.view().invalid == ()
