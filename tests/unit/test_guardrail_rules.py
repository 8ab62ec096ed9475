"""Guardrails as configured and as answered: the API checks, the compiled snapshot, which requests
ask which guardrail, the texts they are asked about, and what an answer means. Pure: no sockets."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from controller.api import ModelPolicySpec
from proxy.guardrails.client import _modelway_verdict, _moderation_verdict
from proxy.guardrails.table import GuardrailTable
from proxy.guardrails.texts import replace_request_texts, replace_response_texts, request_texts, response_texts
from proxy.snapshot import Guardrail, Snapshot, parse_struct

URL = "http://guard.safety.svc:8080/check"


def spec(**guardrail: Any) -> ModelPolicySpec:
    return ModelPolicySpec.model_validate({"guardrails": [{"name": "g", "url": URL, **guardrail}]})


def test_the_api_takes_a_guardrail_with_its_defaults():
    (g,) = spec().guardrails
    assert (g.kind, g.phases, g.timeout_ms, g.failure_mode) == ("modelway", ("request", "response"), 500, "closed")


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("url", "ftp://guard/check", "must start with http:// or https://"),
        ("url", "http://user:pw@guard/check", "must not carry credentials"),
        ("timeoutMs", 60_000, "less than or equal to 10000"),
        ("kind", "lakera", "'modelway' or 'openai-moderation'"),
        ("phases", ["request", "request"], "each phase once"),
        ("failureMode", "maybe", "'open' or 'closed'"),
    ],
)
def test_the_api_refuses_a_bad_guardrail(field, value, says):
    with pytest.raises(ValidationError) as refused:
        spec(**{field: value})
    assert says in str(refused.value)


def test_guardrail_names_are_unique_in_a_policy():
    with pytest.raises(ValidationError, match="names must be unique"):
        ModelPolicySpec.model_validate({"guardrails": [{"name": "g", "url": URL}, {"name": "g", "url": URL}]})


def snapshot(*guardrails: dict[str, Any]) -> Snapshot:
    backend = {"provider": "p", "model": "m"}
    return parse_struct(
        Snapshot,
        {
            "providers": [{"name": "p", "type": "openai", "baseUrl": "https://api.openai.com/v1", "apiKey": "k"}],
            "routes": [
                {"name": f"ns/{name}", "model": name, "rules": [{"name": "r", "backends": [backend]}]}
                for name in ("chat-a", "chat-b", "batch")
            ],
            "policy": {"guardrails": list(guardrails)},
        },
    )


def test_requests_ask_the_guardrails_of_their_route_class_and_phase():
    table = GuardrailTable.build(
        snapshot(
            {"name": "everything", "url": URL},
            {"name": "chats", "url": URL, "routes": ["chat-*"], "phases": ["response"]},
            {"name": "personal", "url": URL, "dataClasses": ["personal", "restricted"], "phases": ["request"]},
        )
    )
    names = lambda route, cls, phase: [g.name for g in table.pick(route, cls, phase)]  # noqa: E731
    assert names("ns/chat-a", "internal", "request") == ["everything"]
    assert names("ns/chat-a", "internal", "response") == ["everything", "chats"]
    assert names("ns/batch", "personal", "request") == ["everything", "personal"]
    assert names("ns/batch", "personal", "response") == ["everything"]
    assert names("ns/unknown", "personal", "request") == []
    assert not GuardrailTable.build(snapshot())


def test_the_texts_are_the_messages_text_and_replacements_go_back_in_place():
    request = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be kind"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "u"}}],
            },
        ],
        "tools": [{"type": "function", "function": {"name": "f", "description": "not asked"}}],
    }
    texts, places = request_texts(request)
    assert texts == ["be kind", "hi"]
    replaced = replace_request_texts(request, places, ["BE KIND", "HI"])
    assert replaced["messages"][0]["content"] == "BE KIND"
    assert replaced["messages"][1]["content"][0] == {"type": "text", "text": "HI"}
    assert replaced["messages"][1]["content"][1] is request["messages"][1]["content"][1]
    assert request["messages"][0]["content"] == "be kind"  # the parsed request is intact
    answer = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "yes"}}, {"index": 1, "message": {}}]
    }
    assert response_texts(answer) == ["yes"]
    assert replace_response_texts(answer, ["no"])["choices"][0]["message"]["content"] == "no"


GUARD = Guardrail(name="g", url=URL)


@pytest.mark.parametrize(
    ("answer", "decision", "reason"),
    [
        ({"decision": "allow"}, "allow", ""),
        ({"decision": "deny", "reason": "no"}, "deny", "no"),
        ({"decision": "deny", "reason": "x" * 1000}, "deny", "x" * 300),
        ({"decision": "replace", "texts": ["a", "b"]}, "replace", ""),
        ({"decision": "replace", "texts": ["a"]}, "error", "answered replace without 2 texts"),
        ({"decision": "replace", "texts": ["a", 2]}, "error", "answered replace without 2 texts"),
        ({"decision": "maybe"}, "error", "answered without a decision of allow, deny or replace"),
        (["allow"], "error", "answered without a decision of allow, deny or replace"),
    ],
)
def test_what_a_modelway_answer_means(answer, decision, reason):
    verdict = _modelway_verdict(GUARD, answer, 2, 0.0)
    assert (verdict.decision, verdict.reason) == (decision, reason)


def test_what_a_moderation_answer_means():
    flagged = {"results": [{"flagged": False}, {"flagged": True, "categories": {"hate": True, "violence": False}}]}
    assert (_moderation_verdict(GUARD, flagged, 0.0).decision, _moderation_verdict(GUARD, flagged, 0.0).reason) == (
        "deny",
        "flagged: hate",
    )
    assert _moderation_verdict(GUARD, {"results": [{"flagged": False}]}, 0.0).decision == "allow"
    assert _moderation_verdict(GUARD, {"id": "x"}, 0.0).decision == "error"


def test_the_controller_compiles_every_binding_policys_guardrails_into_the_snapshot():
    from controller.compile import Workload, compile_workload, judge
    from controller.store import ResourceStore
    from tests.unit.test_policy_compile import EU_SAAS, US_SAAS, chat_route, cluster_policy, policy

    store = ResourceStore()
    for item in (
        EU_SAAS,
        US_SAAS,
        chat_route(),
        cluster_policy("org", guardrails=[{"name": "moderation", "url": URL, "kind": "openai-moderation"}]),
        policy("team", guardrails=[{"name": "pii", "url": URL, "phases": ["request"], "timeoutMs": 80}]),
    ):
        store.apply(item)
    snapshot = compile_workload(judge(store.view()), Workload("team-a"))
    compiled = {g.name: g for g in snapshot.policy.guardrails}
    assert set(compiled) == {"moderation", "pii"}
    assert compiled["moderation"].policy == "ClusterModelPolicy org"
    assert compiled["moderation"].kind == "openai-moderation"
    assert (compiled["pii"].policy, compiled["pii"].phases, compiled["pii"].timeout_ms) == (
        "ModelPolicy team-a/team",
        ("request",),
        80,
    )
