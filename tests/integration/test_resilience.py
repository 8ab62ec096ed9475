"""Retries, fallbacks and timeouts, with providers that fail on cue."""

from __future__ import annotations

import contextlib
import time

import openai
import pytest

from tests.fakes.server import DEFAULT_KEYS

HELLO = [{"role": "user", "content": "hello"}]


def test_falls_back_when_the_primary_fails(oai, fake_openai, fake_anthropic):
    fake_openai.script([{"status": 503}])
    reply = oai.chat.completions.create(model="resilient", messages=HELLO)
    assert reply.choices[0].message.content == "echo: hello"
    assert reply.model == "claude-sonnet-4-5"
    assert len(fake_openai.requests()) == 1 and len(fake_anthropic.requests()) == 1


def test_retries_the_same_backend_on_429_and_5xx(oai, fake_openai):
    fake_openai.script([{"status": 503}, {"status": 429, "retry_after": "0"}])
    reply = oai.chat.completions.create(model="retrying", messages=HELLO)
    assert reply.model == "gpt-4o"
    assert len(fake_openai.requests()) == 3


def test_retry_after_is_honoured(oai, fake_openai):
    fake_openai.script([{"status": 429, "retry_after": "1"}])
    started = time.monotonic()
    oai.chat.completions.create(model="retrying", messages=HELLO)
    assert time.monotonic() - started >= 1.0


def test_connect_error_falls_back(oai, fake_gemini):
    reply = oai.chat.completions.create(model="down", messages=HELLO)
    assert reply.model == "gemini-2.5-flash"


def test_provider_refusing_our_credential_falls_back(oai, fake_openai):
    reply = oai.chat.completions.create(model="rejected", messages=HELLO)
    assert reply.model == "claude-sonnet-4-5"
    assert len(fake_openai.requests()) == 1  # a 401 is this backend's problem: no retry, fall back


def test_all_backends_failed_summarises_each_attempt_without_secrets(oai, fake_openai, fake_anthropic):
    fake_openai.script([{"status": 500, "message": "openai exploded"}])
    fake_anthropic.script([{"status": 529}])
    with pytest.raises(openai.APIStatusError) as caught:
        oai.chat.completions.create(model="doomed", messages=HELLO)
    error = caught.value
    assert error.status_code == 502
    assert error.body["code"] == "all_backends_failed"
    assert "oai/gpt-4o" in error.message and "claude/claude-sonnet-4-5" in error.message
    assert "openai exploded" in error.message
    assert all(key not in error.message for key in DEFAULT_KEYS.values())


def test_garbage_without_fallback_is_a_502_naming_it(oai, fake_openai):
    fake_openai.script([{"garbage": True}, {"garbage": True}])
    with pytest.raises(openai.APIStatusError) as caught:
        oai.chat.completions.create(model="gpt", messages=HELLO)
    assert caught.value.status_code == 502
    assert "bad_response" in caught.value.message


def test_total_timeout_is_a_504(oai, fake_openai):
    fake_openai.script([{"stall": 3.0}])
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        oai.chat.completions.create(model="impatient", messages=HELLO)
    assert caught.value.status_code == 504
    assert time.monotonic() - started < 2.0


def test_first_token_timeout_falls_back_before_anything_is_sent(oai, fake_openai):
    fake_openai.script([{"stall": 3.0}])
    started = time.monotonic()
    stream = oai.chat.completions.create(model="slow", messages=HELLO, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "echo: hello"
    assert time.monotonic() - started < 2.0


def test_a_stream_cut_after_the_first_bytes_ends_with_a_clear_error(oai, fake_openai, fake_anthropic):
    fake_openai.script([{"cut_after_chunks": 3}])
    stream = oai.chat.completions.create(
        model="resilient", messages=[{"role": "user", "content": "a b c d e f g h"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk)
    assert received, "the first chunks reached the client before the cut"
    assert "mid-stream" in str(caught.value)
    assert fake_anthropic.requests() == []  # no fallback once bytes were sent


def test_a_stream_cut_before_any_content_falls_back(oai, fake_openai):
    fake_openai.script([{"cut_after_chunks": 0}])
    stream = oai.chat.completions.create(model="resilient", messages=HELLO, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "echo: hello"


def test_a_request_the_provider_rejects_is_not_retried_elsewhere(oai, fake_openai, fake_anthropic):
    fake_openai.script([{"status": 400, "message": "temperature out of range"}])
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="resilient", messages=HELLO)
    assert "temperature out of range" in caught.value.message
    assert fake_anthropic.requests() == []


def test_a_client_that_hangs_up_mid_stream_cancels_the_upstream_call(oai, fake_openai):
    words = [{"role": "user", "content": "a b c d e f g h"}]
    list(oai.chat.completions.create(model="gpt", messages=words, stream=True))
    assert fake_openai.requests()[-1]["stream_end"] == "complete"

    fake_openai.script([{"stall_after_chunks": 3, "stall": 30.0}])
    stream = oai.chat.completions.create(model="gpt", messages=words, stream=True)
    next(iter(stream))
    hung_up = time.time()
    stream.close()
    deadline = time.monotonic() + 5
    while "stream_end" not in fake_openai.requests()[-1] and time.monotonic() < deadline:
        time.sleep(0.05)
    seen = fake_openai.requests()[-1]
    assert seen.get("stream_end") == "client_disconnected"
    assert seen["ended_at"] - hung_up < 2.0  # at once, not when the provider next writes


def test_a_backend_that_keeps_failing_leaves_the_weighted_pick(oai, fake_openai, fake_anthropic):
    fake_openai.script([{"status": 503}] * 5)
    served = []
    for _ in range(60):
        if len(fake_openai.requests()) >= 5:
            break
        with contextlib.suppress(openai.APIStatusError):
            served.append(oai.chat.completions.create(model="split", messages=HELLO).model)
    assert len(fake_openai.requests()) == 5, "the split route should have sent OpenAI its five failures"
    after = [oai.chat.completions.create(model="split", messages=HELLO).model for _ in range(20)]
    assert set(after) == {"claude-sonnet-4-5"}
    assert len(fake_openai.requests()) == 5
