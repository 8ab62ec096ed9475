"""pytest fixtures for the fake providers.

Registered for every test by ``tests/conftest.py``; ask for them by name.

- ``fake_openai_process`` / ``fake_anthropic_process`` / ``fake_gemini_process`` /
  ``fake_bedrock_process``: session-scoped, one process per provider for the whole run.
- ``fake_openai`` / ``fake_anthropic`` / ``fake_gemini`` / ``fake_bedrock``: the same
  ``FakeProviderProcess``, reset (no recorded requests, no script) before each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .process import FakeProviderProcess

__all__ = [
    "fake_anthropic",
    "fake_anthropic_process",
    "fake_bedrock",
    "fake_bedrock_process",
    "fake_gemini",
    "fake_gemini_process",
    "fake_openai",
    "fake_openai_process",
]


@pytest.fixture(scope="session")
def fake_openai_process() -> Iterator[FakeProviderProcess]:
    with FakeProviderProcess("openai") as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_anthropic_process() -> Iterator[FakeProviderProcess]:
    with FakeProviderProcess("anthropic") as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_gemini_process() -> Iterator[FakeProviderProcess]:
    with FakeProviderProcess("gemini") as fake:
        yield fake


@pytest.fixture
def fake_openai(fake_openai_process: FakeProviderProcess) -> FakeProviderProcess:
    fake_openai_process.reset()
    return fake_openai_process


@pytest.fixture
def fake_anthropic(fake_anthropic_process: FakeProviderProcess) -> FakeProviderProcess:
    fake_anthropic_process.reset()
    return fake_anthropic_process


@pytest.fixture
def fake_gemini(fake_gemini_process: FakeProviderProcess) -> FakeProviderProcess:
    fake_gemini_process.reset()
    return fake_gemini_process


@pytest.fixture(scope="session")
def fake_bedrock_process() -> Iterator[FakeProviderProcess]:
    with FakeProviderProcess("bedrock") as fake:
        yield fake


@pytest.fixture
def fake_bedrock(fake_bedrock_process: FakeProviderProcess) -> FakeProviderProcess:
    fake_bedrock_process.reset()
    return fake_bedrock_process


@pytest.fixture(scope="session")
def fake_vertex_process() -> Iterator[FakeProviderProcess]:
    with FakeProviderProcess("vertex") as fake:
        yield fake


@pytest.fixture
def fake_vertex(fake_vertex_process: FakeProviderProcess) -> FakeProviderProcess:
    fake_vertex_process.reset()
    return fake_vertex_process
