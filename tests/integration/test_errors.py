"""Bad input gets a clear OpenAI-style (or Anthropic-style) JSON error."""

from __future__ import annotations

import json
import urllib.error
import urllib.request


def _post(sidecar, path: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(
        sidecar.base_url + path, data=body, method="POST", headers={"content-type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_malformed_json(sidecar):
    status, body = _post(sidecar, "/v1/chat/completions", b'{"model": "gpt", "messages": [')
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert "not valid JSON" in body["error"]["message"]


def test_missing_messages_names_the_field(sidecar):
    status, body = _post(sidecar, "/v1/chat/completions", b'{"model": "gpt"}')
    assert status == 400 and "'messages' is required" in body["error"]["message"]
    assert body["error"]["param"] == "messages"


def test_bad_message_role_names_the_index(sidecar):
    payload = {"model": "gpt", "messages": [{"role": "user", "content": "a"}, {"role": "wizard", "content": "b"}]}
    status, body = _post(sidecar, "/v1/chat/completions", json.dumps(payload).encode())
    assert status == 400 and "messages[1].role" in body["error"]["message"]


def test_unknown_model_lists_what_is_served(sidecar):
    payload = {"model": "gpt-5-ultra", "messages": [{"role": "user", "content": "a"}]}
    status, body = _post(sidecar, "/v1/chat/completions", json.dumps(payload).encode())
    assert status == 404 and body["error"]["code"] == "model_not_found"
    assert "gpt-5-ultra" in body["error"]["message"] and "claude" in body["error"]["message"]


def test_wrong_content_type(sidecar):
    status, body = _post(
        sidecar, "/v1/chat/completions", b"model=gpt", content_type="application/x-www-form-urlencoded"
    )
    assert status == 415 and "application/json" in body["error"]["message"]


def test_body_over_the_limit_is_413(sidecar):
    huge = json.dumps({"model": "gpt", "messages": [{"role": "user", "content": "x" * (9 * 1024 * 1024)}]})
    status, body = _post(sidecar, "/v1/chat/completions", huge.encode())
    assert status == 413 and "limit" in body["error"]["message"]


def test_unknown_path_is_a_json_404(sidecar):
    status, body = _post(sidecar, "/v1/completions", b"{}")
    assert status == 404 and "/v1/completions" in body["error"]["message"]


def test_anthropic_endpoint_answers_in_anthropic_shape(sidecar):
    status, body = _post(sidecar, "/v1/messages", b'{"model": "claude", "messages": []}')
    assert status == 400
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


def test_wrong_method_is_a_json_405(sidecar):
    request = urllib.request.Request(sidecar.base_url + "/v1/chat/completions", method="GET")
    try:
        urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
        assert exc.code == 405 and exc.headers["allow"] == "POST"
        assert "GET is not allowed" in body["error"]["message"]
    else:
        raise AssertionError("GET on /v1/chat/completions must be refused")
