"""Helpers shared by test_fakes.py (OpenAI, Azure) and test_fakes_anthropic_gemini.py:
raw HTTP, SSE splitting, and the direct_oai fixture (an OpenAI SDK client talking to
fake_openai directly, no sidecar). The fixture reaches the test modules through a
star import, hence __all__."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest

from tests.fakes.process import FakeProviderProcess

__all__ = ["direct_oai"]


def raw(url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """POST (or GET without body) with urllib; returns status, headers, body even for errors."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def sse_events(body: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) pairs of an SSE body, whatever the line ending."""
    text = body.decode().replace("\r\n", "\n")
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields.get("event"), fields["data"]))
    return events


@pytest.fixture
def direct_oai(fake_openai: FakeProviderProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake_openai.base_url + "/v1", api_key=fake_openai.api_key, max_retries=0)
