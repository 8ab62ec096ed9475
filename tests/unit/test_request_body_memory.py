"""A provider request body weighs what it says: each attempt holds its body until the answer's last
byte (seconds, for a model call), so whatever buffer stands behind those bytes is paid once per
request in flight."""

from __future__ import annotations

import tracemalloc

import orjson

from proxy.providers.base import json_body
from proxy.providers.openai import OpenAITranslator
from proxy.snapshot import Provider

OPENAI = Provider(name="ns.openai", type="openai", base_url="https://api.openai.com/v1")


def _held(build: object) -> tuple[bytes, int]:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        made = build()  # type: ignore[operator]
        return made, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_chat_body_sent_on_holds_no_more_memory_than_its_bytes() -> None:
    body = {"model": "app-model", "messages": [{"role": "user", "content": "x" * 5000}], "temperature": 0.2}
    translator = OpenAITranslator(OPENAI)
    request, held = _held(lambda: translator.passthrough_request(dict(body), model="gpt-4o", stream=False, headers={}))
    assert orjson.loads(request.body) == {**body, "model": "gpt-4o"}
    # the body's bytes, the request, its headers and the copied dict; not the encoder's grown buffer
    assert held < len(request.body) + 4096, held


def test_a_short_body_is_as_small_as_its_bytes() -> None:
    body, held = _held(lambda: json_body({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
    assert body == b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    assert held < 200, held
