"""Fakes for every provider wire format and one real sidecar process in front of them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.integration.limits_sidecar import limited_snapshot
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
    return sidecar.openai_client()


@pytest.fixture
def claude(sidecar: SidecarProcess) -> anthropic.Anthropic:
    return sidecar.anthropic_client()


@pytest.fixture(autouse=True)
def _fresh_fakes(fake_openai: Any, fake_anthropic: Any, fake_gemini: Any) -> None:
    """Every test starts with no scripted failures and no recorded requests."""


@pytest.fixture
def limited_sidecar(fake_openai: Any, fake_anthropic: Any) -> Iterator[Any]:
    """Starts sidecar processes on `limited_snapshot(**snapshot)` (with `extra_args` and `env` if given),
    stopped after the test."""
    started: list[SidecarProcess] = []

    def run(
        *, extra_args: list[str] | None = None, env: dict[str, str] | None = None, **snapshot: Any
    ) -> SidecarProcess:
        data = limited_snapshot(fake_openai.base_url, fake_anthropic.base_url, **snapshot)
        process = SidecarProcess(data, extra_args=extra_args, env=env)
        process.start()
        started.append(process)
        return process

    yield run
    for process in started:
        process.stop()
