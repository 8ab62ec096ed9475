"""A hostile provider and a real sidecar in front of it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.hostile import HostileProvider
from tests.integration.sidecar import SidecarProcess

# Looks like a real key, so a scrubber that only knows key shapes would also catch it.
HOSTILE_KEY = "sk-hostile-4f9c2a7e1b3d5f6a8c0e2b4d6f8a0c1e"


def hostile_snapshot(base_url: str, *, provider_type: str = "openai", **rule: Any) -> dict[str, Any]:
    """One route `m` to the hostile provider, with one try and short timeouts unless told otherwise."""
    provider: dict[str, Any] = {
        "name": "hostile",
        "type": provider_type,
        "baseUrl": base_url + "/v1",
        "apiKey": HOSTILE_KEY,
    }
    if provider_type == "azure-openai":
        provider["apiVersion"] = "2024-10-21"
    if provider_type in ("anthropic", "gemini"):
        provider["baseUrl"] = base_url
    rule = {
        "name": "default",
        "backends": [{"provider": "hostile", "model": "m-upstream"}],
        "retry": {"attempts": 1},
        "timeouts": {"totalSeconds": 5},
        **rule,
    }
    return {"providers": [provider], "routes": [{"name": "m", "model": "m", "rules": [rule]}]}


@pytest.fixture
def hostile() -> Iterator[HostileProvider]:
    with HostileProvider() as provider:
        yield provider


@pytest.fixture
def hostile_sidecar(hostile: HostileProvider) -> Iterator[SidecarProcess]:
    with SidecarProcess(hostile_snapshot(hostile.base_url), extra_args=["--log-level", "debug"]) as process:
        yield process
