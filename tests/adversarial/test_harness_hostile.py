"""The hostile provider itself: what it is scripted to send is what the sidecar gets."""

from __future__ import annotations

import json
import urllib.request

from tests.adversarial.conftest import HOSTILE_KEY
from tests.adversarial.hostile import HostileProvider, http
from tests.integration.sidecar import SidecarProcess


def _chat(sidecar: SidecarProcess) -> tuple[int, dict]:
    request = urllib.request.Request(
        sidecar.base_url + "/v1/chat/completions",
        method="POST",
        headers={"content-type": "application/json"},
        data=json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode(),
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_scripted_answer_reaches_the_app(hostile: HostileProvider, hostile_sidecar: SidecarProcess) -> None:
    answer = {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "m-upstream",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "scripted"}, "finish_reason": "stop"}],
    }
    hostile.script(http(200, json.dumps(answer).encode()))
    status, body = _chat(hostile_sidecar)
    assert status == 200 and body["choices"][0]["message"]["content"] == "scripted"
    assert hostile.received[0].headers["authorization"] == f"Bearer {HOSTILE_KEY}"
    assert json.loads(hostile.received[0].body)["model"] == "m-upstream"
