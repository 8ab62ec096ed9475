"""`redact` on the request path, in a real sidecar process driven by the official SDKs.

The snapshot carries a compiled policy (as the controller pushes it): personal data may reach the
US SaaS backends only masked (one restores the answer, one leaves the placeholders), the
in-cluster model as it is. All are the fake OpenAI server under different upstream model names;
it echoes the last user text ("echo: ...") and calls a tool when asked ("use tool ..."), so the
answer carries whatever the provider received, and the fake records every byte it got.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from tests.fakes.server import DEFAULT_KEYS
from tests.integration.sidecar import SidecarProcess

US, US_RAW, IN_CLUSTER = "us-model", "us-raw-model", "cluster-model"
POLICY = "ModelPolicy team-a/mask-outside-eu"
EMAIL, PHONE, IBAN, EMPLOYEE = "jane.doe@example.org", "+44 20 7946 0958", "DE89 3704 0044 0532 0130 00", "EMP-123456"
VALUES = (EMAIL, PHONE, IBAN, EMPLOYEE)
PROMPT = f"Write to {EMAIL} or call {PHONE}; pay {IBAN} for {EMPLOYEE}, and {EMAIL} again"
TOOLS = [
    {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}},
    }
]


def _provider(name: str, url: str, hosting: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "openai-compatible",
        "baseUrl": url + "/v1",
        "apiKey": DEFAULT_KEYS["openai"],
        "hosting": hosting,
    }


def _route(model: str, backends: list[dict[str, str]], fallbacks: list[dict[str, str]] | None = None) -> dict:
    return {
        "name": f"team-a/{model}",
        "model": model,
        "rules": [{"name": "default", "retry": {"attempts": 1}, "backends": backends, "fallbacks": fallbacks or []}],
    }


def _redacted(provider: str, model: str, *, restore: bool) -> dict[str, Any]:
    return {
        "provider": provider,
        "model": model,
        "dataClasses": ["personal", "restricted"],
        "policy": POLICY,
        "redaction": {
            "kinds": ["email", "phone", "iban"],
            "patterns": [{"name": "employee_id", "regex": "EMP-[0-9]{6}"}],
            "restore": restore,
        },
    }


def redaction_snapshot(openai_url: str) -> dict[str, Any]:
    us = {"provider": "team-a.us", "model": US}
    return {
        "providers": [
            _provider("team-a.us", openai_url, "saas"),
            _provider("team-a.us-raw", openai_url, "saas"),
            _provider("team-a.vllm", openai_url, "in-cluster"),
        ],
        "routes": [
            _route("masked", [us]),
            _route("placeholders", [{"provider": "team-a.us-raw", "model": US_RAW}]),
            _route("with-fallback", [us], [{"provider": "team-a.vllm", "model": IN_CLUSTER}]),
            _route("embed", [us]),
            _route("embed-placeholders", [{"provider": "team-a.us-raw", "model": US_RAW}]),
        ],
        "policy": {
            "workload": "team-a/web",
            "policies": [POLICY],
            "defaultClass": "internal",
            "detectPersonalData": True,
            "redactedBackends": [
                _redacted("team-a.us", US, restore=True),
                _redacted("team-a.us-raw", US_RAW, restore=False),
            ],
        },
    }


@pytest.fixture(scope="module")
def masking(fake_openai_process: Any) -> Any:
    with SidecarProcess(redaction_snapshot(fake_openai_process.base_url)) as process:
        yield process


@pytest.fixture
def client(masking: SidecarProcess) -> openai.OpenAI:
    return masking.openai_client()


@pytest.fixture
def claude(masking: SidecarProcess) -> anthropic.Anthropic:
    return masking.anthropic_client()


def received(fake: Any) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r["path"].endswith("/chat/completions")]


def assert_no_value_reached(fake: Any) -> None:
    requests = received(fake)
    assert requests
    for request in requests:
        raw = request["text"] or json.dumps(request["json"])
        for value in VALUES:
            assert value not in raw and value not in json.dumps(request["json"]), value


def sent_text(fake: Any) -> str:
    (request,) = received(fake)
    return request["json"]["messages"][-1]["content"]


# --- plain answers ---------------------------------------------------------------------------------


def test_openai_plain_the_provider_gets_placeholders_and_the_app_its_values(client, fake_openai):
    answer = client.chat.completions.create(model="masked", messages=[{"role": "user", "content": PROMPT}])
    assert_no_value_reached(fake_openai)
    sent = sent_text(fake_openai)
    assert sent == ("Write to <EMAIL_1> or call <PHONE_1>; pay <IBAN_1> for <EMPLOYEE_ID_1>, and <EMAIL_1> again")
    assert answer.choices[0].message.content == "echo: " + PROMPT


def test_anthropic_plain_the_provider_gets_placeholders_and_the_app_its_values(claude, fake_openai):
    answer = claude.messages.create(model="masked", max_tokens=200, messages=[{"role": "user", "content": PROMPT}])
    assert_no_value_reached(fake_openai)
    assert "<EMAIL_1>" in json.dumps(received(fake_openai)[0]["json"])
    assert answer.content[0].text == "echo: " + PROMPT


def test_restore_false_leaves_the_placeholders_in_the_answer(client, fake_openai):
    answer = client.chat.completions.create(model="placeholders", messages=[{"role": "user", "content": PROMPT}])
    assert_no_value_reached(fake_openai)
    text = answer.choices[0].message.content
    assert text == "echo: " + sent_text(fake_openai)
    assert "<EMAIL_1>" in text and not any(value in text for value in VALUES)


def test_a_tool_calls_arguments_are_restored(client, fake_openai):
    answer = client.chat.completions.create(
        model="masked", messages=[{"role": "user", "content": f"use tool find {EMAIL} and {EMPLOYEE}"}], tools=TOOLS
    )
    assert_no_value_reached(fake_openai)
    (call,) = answer.choices[0].message.tool_calls
    assert json.loads(call.function.arguments) == {"query": f"find {EMAIL} and {EMPLOYEE}"}


def test_a_request_without_personal_data_is_sent_as_it_is(client, fake_openai):
    answer = client.chat.completions.create(
        model="masked",
        messages=[{"role": "user", "content": "hello <EMAIL_1> there"}],
        extra_headers={"x-modelway-data-class": "personal"},
    )
    assert sent_text(fake_openai) == "hello <EMAIL_1> there"  # placeholder-shaped text of the app's own
    assert answer.choices[0].message.content == "echo: hello <EMAIL_1> there"


# --- streams ---------------------------------------------------------------------------------------


def test_openai_stream_the_app_gets_its_values_back(client, fake_openai):
    stream = client.chat.completions.create(model="masked", messages=[{"role": "user", "content": PROMPT}], stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert_no_value_reached(fake_openai)
    assert text == "echo: " + PROMPT


def test_anthropic_stream_the_app_gets_its_values_back(claude, fake_openai):
    with claude.messages.stream(
        model="masked", max_tokens=200, messages=[{"role": "user", "content": PROMPT}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert_no_value_reached(fake_openai)
    assert text == "echo: " + PROMPT


def test_a_streamed_tool_calls_arguments_are_restored(client, fake_openai):
    stream = client.chat.completions.create(
        model="masked",
        messages=[{"role": "user", "content": f"use tool find {EMAIL} and {PHONE}"}],
        tools=TOOLS,
        stream=True,
    )
    arguments = "".join(
        call.function.arguments or ""
        for chunk in stream
        if chunk.choices
        for call in chunk.choices[0].delta.tool_calls or ()
    )
    assert_no_value_reached(fake_openai)
    assert json.loads(arguments) == {"query": f"find {EMAIL} and {PHONE}"}


def test_a_stream_with_restore_false_keeps_the_placeholders(client, fake_openai):
    stream = client.chat.completions.create(
        model="placeholders", messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "echo: " + sent_text(fake_openai) and "<PHONE_1>" in text


# --- fallbacks and refusals -------------------------------------------------------------------------


def test_a_fallback_that_needs_no_masking_gets_the_original_request(client, fake_openai):
    fake_openai.script([{"status": 503}])  # the masked US backend fails
    answer = client.chat.completions.create(model="with-fallback", messages=[{"role": "user", "content": PROMPT}])
    first, second = received(fake_openai)
    assert first["json"]["model"] == US and EMAIL not in json.dumps(first["json"])
    assert second["json"]["model"] == IN_CLUSTER and second["json"]["messages"][-1]["content"] == PROMPT
    assert answer.choices[0].message.content == "echo: " + PROMPT


def test_a_value_no_placeholder_can_go_on_skips_the_backend(client, fake_openai):
    image = {"type": "image_url", "image_url": {"url": f"https://example.org/avatar?owner={EMAIL}"}}
    content = [{"type": "text", "text": "describe"}, image]
    answer = client.chat.completions.create(model="with-fallback", messages=[{"role": "user", "content": content}])
    assert [r["json"]["model"] for r in received(fake_openai)] == [IN_CLUSTER]  # never the US one
    assert answer.choices[0].message.content is not None


def test_a_value_no_placeholder_can_go_on_is_a_400_when_no_backend_is_left(client, fake_openai):
    image = {"type": "image_url", "image_url": {"url": f"https://example.org/avatar?owner={EMAIL}"}}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="masked", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, image]}]
        )
    message = refused.value.body["message"]
    assert "messages[0].content[1].image_url.url" in message and "email" in message and POLICY in message
    assert EMAIL not in message
    assert received(fake_openai) == []


# --- embeddings: vectors cannot be given their values back --------------------------------------------


def test_embeddings_are_sent_masked_only_where_the_rule_leaves_placeholders(client, fake_openai):
    client.embeddings.create(model="embed-placeholders", input=[PROMPT])
    (request,) = [r for r in fake_openai.requests() if r["path"].endswith("/embeddings")]
    assert request["json"]["input"] == [
        "Write to <EMAIL_1> or call <PHONE_1>; pay <IBAN_1> for <EMPLOYEE_ID_1>, and <EMAIL_1> again"
    ]


def test_embeddings_to_a_backend_that_would_restore_are_refused(client, fake_openai):
    with pytest.raises(openai.BadRequestError, match="embeddings of masked text cannot be given their values back"):
        client.embeddings.create(model="embed", input=[PROMPT])
    assert fake_openai.requests() == []


# --- what the sidecar says about it -----------------------------------------------------------------


def test_the_audit_line_and_metrics_count_what_was_masked_never_the_values(client, masking, fake_openai):
    before = masking.metric("modelway_redactions_total", modelway_redaction_kind="email")
    client.chat.completions.create(model="masked", messages=[{"role": "user", "content": PROMPT}])
    after = masking.metric("modelway_redactions_total", modelway_redaction_kind="email")
    assert after - before == 2
    lines = [line for line in masking.logs().splitlines() if '"audit":"modelway.policy"' in line]
    entry = json.loads(lines[-1][lines[-1].index("{") :])
    assert entry["decision"] == "redact" and entry["policy"] == [POLICY]
    assert entry["redacted"] == {"email": 2, "phone": 1, "iban": 1, "employee_id": 1}
    logs = masking.logs()
    assert not any(value in logs for value in VALUES)
