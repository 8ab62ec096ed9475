"""Fakes for every provider wire format and one real sidecar process in front of them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.integration.sidecar import SidecarProcess
from tests.integration.snapshots import build_snapshot


@pytest.fixture(scope="session")
def snapshot_data(fake_openai_process: Any, fake_anthropic_process: Any, fake_gemini_process: Any) -> dict[str, Any]:
    return build_snapshot(fake_openai_process.base_url, fake_anthropic_process.base_url, fake_gemini_process.base_url)


@pytest.fixture(scope="session")
def sidecar(snapshot_data: dict[str, Any]) -> Iterator[SidecarProcess]:
    with SidecarProcess(snapshot_data) as process:
        yield process


@pytest.fixture
def oai(sidecar: SidecarProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=sidecar.base_url + "/v1", api_key="placeholder", max_retries=0, timeout=20)


@pytest.fixture
def claude(sidecar: SidecarProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sidecar.base_url, api_key="placeholder", max_retries=0, timeout=20)


@pytest.fixture(autouse=True)
def _fresh_fakes(fake_openai: Any, fake_anthropic: Any, fake_gemini: Any) -> None:
    """Every test starts with no scripted failures and no recorded requests."""
