"""The provider-answer tests' hostile provider and the real sidecar in front of it, one of each per
module: `m` (one OpenAI backend), `fb` (the same, falling back to a second model), `gem` and `ant`
(Gemini and Anthropic), all of them the hostile provider."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.conftest import HOSTILE_KEY
from tests.adversarial.hostile import HostileProvider
from tests.integration.sidecar import SidecarProcess


def _rule(*backends: str, fallbacks: tuple[str, ...] = ()) -> dict[str, Any]:
    def backend(key: str) -> dict[str, str]:
        provider, model = key.split("/")
        return {"provider": provider, "model": model}

    return {
        "name": "default",
        "backends": [backend(b) for b in backends],
        "fallbacks": [backend(b) for b in fallbacks],
        "retry": {"attempts": 1},
        "timeouts": {"totalSeconds": 10},
    }


def _snapshot(base_url: str) -> dict[str, Any]:
    """`m`: one OpenAI backend; `fb`: the same, falling back to a second model; `gem`, `ant`: Gemini and
    Anthropic; all of them the hostile provider."""
    return {
        "providers": [
            {"name": "oai", "type": "openai", "baseUrl": base_url + "/v1", "apiKey": HOSTILE_KEY},
            {"name": "gem", "type": "gemini", "baseUrl": base_url, "apiKey": HOSTILE_KEY},
            {"name": "ant", "type": "anthropic", "baseUrl": base_url, "apiKey": HOSTILE_KEY},
        ],
        "routes": [
            {"name": "m", "model": "m", "rules": [_rule("oai/m-upstream")]},
            {"name": "fb", "model": "fb", "rules": [_rule("oai/m-upstream", fallbacks=("oai/m-fallback",))]},
            {"name": "gem", "model": "gem", "rules": [_rule("gem/g-upstream")]},
            {"name": "ant", "model": "ant", "rules": [_rule("ant/a-upstream")]},
        ],
    }


@pytest.fixture(scope="module")
def provider() -> Iterator[HostileProvider]:
    with HostileProvider() as hostile:
        yield hostile


@pytest.fixture(scope="module")
def sidecar(provider: HostileProvider) -> Iterator[SidecarProcess]:
    with SidecarProcess(_snapshot(provider.base_url)) as process:
        yield process


@pytest.fixture(autouse=True)
def _clean_script(provider: HostileProvider) -> Iterator[None]:
    provider._script.clear()
    yield
    provider._script.clear()
