"""Routing by the request's size through a real sidecar: long prompts to the long-context model by a
rule's `inputTokens` match, a backend whose context window the prompt cannot fit skipped for its
fallback, and a 400 in the app's API when no backend fits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.fakes.process import FakeProviderProcess
from tests.integration.sidecar import SidecarProcess

SHORT = [{"role": "user", "content": "hello"}]
# About 40 000 bytes of body: an estimated 10 000 input tokens (bytes / 4).
LONG = [{"role": "user", "content": "word " * 8000}]
# About 400 000 bytes: an estimated 100 000 input tokens, beyond every window below.
HUGE = [{"role": "user", "content": "word " * 80000}]


def sized_snapshot(snapshot_data: dict[str, Any]) -> dict[str, Any]:
    oai = next(p for p in snapshot_data["providers"] if p["name"] == "oai")
    provider = {
        **oai,
        "name": "windowed",
        "models": {
            "small-model": {"contextWindow": 4000, "maxOutputTokens": 1000},
            "long-model": {"contextWindow": 50000},
        },
    }
    small = {"provider": "windowed", "model": "small-model"}
    long = {"provider": "windowed", "model": "long-model"}
    return {
        "providers": [provider],
        "routes": [
            {
                "name": "by-size",
                "model": "by-size",
                "rules": [
                    {"name": "long-prompts", "matchInputTokens": {"min": 5000}, "backends": [long]},
                    {"name": "default", "backends": [small]},
                ],
            },
            {"name": "spill", "model": "spill", "rules": [{"backends": [small], "fallbacks": [long]}]},
        ],
    }


@pytest.fixture(scope="module")
def sized(snapshot_data: dict[str, Any]) -> Iterator[SidecarProcess]:
    with SidecarProcess(sized_snapshot(snapshot_data)) as process:
        yield process


def client(sidecar: SidecarProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=sidecar.base_url + "/v1", api_key="placeholder", max_retries=0)


def test_a_long_prompt_goes_to_the_long_context_model_and_a_short_one_to_the_default(
    sized: SidecarProcess, fake_openai: FakeProviderProcess
) -> None:
    app = client(sized)
    assert app.chat.completions.create(model="by-size", messages=LONG).model == "long-model"  # type: ignore[arg-type]
    assert app.chat.completions.create(model="by-size", messages=SHORT).model == "small-model"  # type: ignore[arg-type]
    assert [r["json"]["model"] for r in fake_openai.requests()] == ["long-model", "small-model"]


def test_a_backend_too_small_for_the_prompt_is_skipped_for_its_fallback_without_a_call(
    sized: SidecarProcess, fake_openai: FakeProviderProcess
) -> None:
    app = client(sized)
    reply = app.chat.completions.create(model="spill", messages=LONG)  # type: ignore[arg-type]
    assert reply.model == "long-model"
    assert [r["json"]["model"] for r in fake_openai.requests()] == ["long-model"]  # the small one never called
    assert "backend=windowed/small-model reason=context_window" in sized.logs()
    # A short prompt fits the small model: served there, as without windows.
    assert app.chat.completions.create(model="spill", messages=SHORT).model == "small-model"  # type: ignore[arg-type]


def test_max_tokens_that_overflow_the_small_window_skip_it_too(
    sized: SidecarProcess, fake_openai: FakeProviderProcess
) -> None:
    prompt = [{"role": "user", "content": "word " * 2000}]  # about 2 500 tokens: fits 4000 with 1000 out
    app = client(sized)
    assert app.chat.completions.create(model="spill", messages=prompt).model == "small-model"  # type: ignore[arg-type]
    asked = app.chat.completions.create(model="spill", messages=prompt, max_tokens=900)  # type: ignore[arg-type]
    assert asked.model == "small-model"  # 2 500 + 900 fits
    fake_openai.reset()
    fits_not = [{"role": "user", "content": "word " * 2600}]  # about 3 300 tokens + 1000 out > 4000
    assert app.chat.completions.create(model="spill", messages=fits_not).model == "long-model"  # type: ignore[arg-type]


def test_when_no_backend_fits_the_openai_app_gets_a_400_context_length_exceeded(
    sized: SidecarProcess, fake_openai: FakeProviderProcess
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(sized).chat.completions.create(model="spill", messages=HUGE)  # type: ignore[arg-type]
    error = caught.value
    assert error.status_code == 400
    assert isinstance(error.body, dict) and error.body["code"] == "context_length_exceeded"
    assert "input tokens" in error.message and "the largest is 50000 tokens" in error.message
    assert fake_openai.requests() == []


def test_when_no_backend_fits_the_anthropic_app_gets_an_invalid_request_error(
    sized: SidecarProcess, fake_openai: FakeProviderProcess
) -> None:
    app = anthropic.Anthropic(base_url=sized.base_url, api_key="placeholder", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as caught:
        app.messages.create(model="spill", max_tokens=100, messages=HUGE)  # type: ignore[arg-type]
    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict) and caught.value.body["error"]["type"] == "invalid_request_error"
    assert "the largest is 50000 tokens" in caught.value.message
    assert fake_openai.requests() == []
