"""An app that calls one API loads only that API's front end: a sidecar whose app calls OpenAI's chat
completions never imports the Anthropic Messages, count_tokens or Responses code (each injected pod
pays for what it imports); the first request to one of those endpoints imports it (proxy.server,
proxy.deferred_frontend), once for all the requests that arrive meanwhile, while the sidecar
answers others, and is answered as if it had always been there. An import that fails is a 503 in the
API's shape that the SDKs retry.

The real sidecar process, run by its real entry point under a wrapper that writes the modules it
held as it exits (as tests/integration/test_sidecar_footprint.py does), and that can slow down or
break an import: what a front end on a busy node, or a broken image, looks like."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import anthropic

from tests.integration.sidecar import SidecarProcess
from tests.integration.test_sidecar_footprint import _openai_only, _with_claude

ANTHROPIC_FRONTEND = (
    "proxy.frontends.anthropic_messages",
    "proxy.frontends.anthropic_render",
    "proxy.frontends.anthropic_stream",
)
RESPONSES_FRONTEND = (
    "proxy.frontends.openai_responses",
    "proxy.frontends.openai_responses_request",
    "proxy.frontends.openai_responses_stream",
    "proxy.providers.openai_responses",  # the reader of a Responses provider's own answers
)
COUNT_TOKENS = ("proxy.request.count_tokens",)
# What only those front ends use: the stream encoders' base, and the Anthropic tables (also the
# Anthropic backends', not named by an OpenAI-only snapshot).
THEIR_OWN = ("proxy.frontends.chunk_encoder", "proxy.providers.anthropic_convert")

# The entry point, with the modules it held written to argv[1] as it exits; imports named in
# SLOW_IMPORTS take SLOW_SECONDS longer, and the one named in BROKEN_IMPORT fails the first time.
RUN_WITH_HOOKS = (
    "import atexit, json, os, runpy, sys, time\n"
    "out = sys.argv[1]\n"
    "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted(sys.modules))))\n"
    "slow = set(os.environ.get('SLOW_IMPORTS', '').split())\n"
    "broken = [os.environ.get('BROKEN_IMPORT', '')]\n"
    "class Hooks:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name in slow:\n"
    "            time.sleep(float(os.environ['SLOW_SECONDS']))\n"
    "        if name == broken[0]:\n"
    "            broken[0] = ''\n"
    "            raise ImportError(name + ' is broken (a test)')\n"
    "        return None\n"
    "sys.meta_path.insert(0, Hooks())\n"
    "sys.argv = ['modelway-proxy', *sys.argv[2:]]\n"
    "runpy.run_module('proxy', run_name='__main__', alter_sys=True)\n"
)
QUESTION: Any = [{"role": "user", "content": "one two three"}]


def _sidecar(snapshot: dict[str, Any], modules: Path, **hooks: str) -> SidecarProcess:
    process = SidecarProcess(snapshot)
    process._args = [sys.executable, "-c", RUN_WITH_HOOKS, str(modules), *process._args[3:]]
    process._env.update(hooks)
    return process


def _loaded(modules: Path) -> set[str]:
    return set(json.loads(modules.read_text()))


def _post(url: str, body: dict[str, Any], *, timeout: float = 20) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, json.loads(error.read())


def _loads(process: SidecarProcess, what: str) -> int:
    return process.logs().count(f"loaded {what} on its first request")


def test_an_openai_chat_sidecar_serves_without_loading_the_other_front_ends(
    tmp_path: Path, fake_openai_process: Any
) -> None:
    modules = tmp_path / "modules.json"
    with _sidecar(_openai_only(fake_openai_process.base_url), modules) as process:
        client = process.openai_client()
        answer = client.chat.completions.create(model="gpt", messages=QUESTION)
        assert answer.choices[0].message.content == "echo: one two three"
        streamed = client.chat.completions.create(model="gpt", messages=QUESTION, stream=True)
        assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices) == (
            "echo: one two three"
        )
        assert [model.id for model in client.models.list()] == ["gpt"]
        # an Anthropic path no endpoint takes: answered in Anthropic's shape without its front end
        status, _, body = _post(process.base_url + "/v1/messages/batches", {})
        assert status == 404 and body["type"] == "error" and body["error"]["type"] == "not_found_error"
    loaded = _loaded(modules)
    assert "proxy.frontends.openai_chat" in loaded
    unused = sorted(loaded & {*ANTHROPIC_FRONTEND, *RESPONSES_FRONTEND, *COUNT_TOKENS, *THEIR_OWN})
    assert not unused, f"an OpenAI chat sidecar loaded front ends its app never called: {unused}"


def _at_once(calls: list[Any]) -> list[Any]:
    """Each call in its own thread, all started together; their results (or exceptions)."""
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as exc:  # (reported by the assertions on the results)
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_concurrent_first_requests_of_each_api_share_one_load_and_are_answered(
    tmp_path: Path, fake_openai_process: Any, fake_anthropic_process: Any
) -> None:
    snapshot = _with_claude(_openai_only(fake_openai_process.base_url), fake_anthropic_process.base_url)
    modules = tmp_path / "modules.json"
    slow = " ".join((ANTHROPIC_FRONTEND[0], RESPONSES_FRONTEND[0]))  # the requests overlap the loads
    with _sidecar(snapshot, modules, SLOW_IMPORTS=slow, SLOW_SECONDS="1") as process:
        claude, oai = process.anthropic_client(), process.openai_client()

        def message(model: str) -> str:
            made = claude.messages.create(model=model, max_tokens=100, messages=QUESTION)
            return "".join(block.text for block in made.content if block.type == "text")

        def streamed_message(model: str) -> str:
            with claude.messages.stream(model=model, max_tokens=100, messages=QUESTION) as stream:
                return "".join(stream.text_stream)

        def response(stream: bool) -> str:
            if not stream:
                return oai.responses.create(model="gpt", input="one two three").output_text
            with oai.responses.stream(model="gpt", input="one two three") as events:
                return events.get_final_response().output_text

        calls = [
            lambda: message("claude"),  # the pass-through to Anthropic
            lambda: message("gpt"),  # translated to OpenAI
            lambda: streamed_message("claude"),
            lambda: streamed_message("gpt"),
            lambda: response(False),
            lambda: response(True),
            lambda: response(False),
            lambda: claude.messages.count_tokens(model="claude", messages=QUESTION).input_tokens,
        ]
        assert _at_once(calls) == [*["echo: one two three"] * 7, 3]
        assert _loads(process, "the Anthropic Messages front end") == 1
        assert _loads(process, "the OpenAI Responses front end") == 1
        assert _loads(process, "the count_tokens endpoint") == 1
        assert message("claude") == "echo: one two three"  # once loaded, as any request
    assert {*ANTHROPIC_FRONTEND, *RESPONSES_FRONTEND, *COUNT_TOKENS} <= _loaded(modules)


def test_the_sidecar_answers_other_requests_while_a_front_end_loads_and_a_first_request_that_leaves_breaks_nothing(
    tmp_path: Path, fake_openai_process: Any
) -> None:
    modules = tmp_path / "modules.json"
    snapshot = _openai_only(fake_openai_process.base_url)
    with _sidecar(snapshot, modules, SLOW_IMPORTS=ANTHROPIC_FRONTEND[0], SLOW_SECONDS="3") as process:
        hasty = process.anthropic_client().with_options(timeout=0.5)  # leaves while the front end loads
        started = time.monotonic()
        try:
            hasty.messages.create(model="gpt", max_tokens=100, messages=QUESTION)
            raise AssertionError("answered before its front end could have loaded")
        except anthropic.APITimeoutError:
            pass
        # Meanwhile OpenAI apps are served: the import runs beside the event loop, not on it.
        answer = process.openai_client().chat.completions.create(model="gpt", messages=QUESTION)
        assert answer.choices[0].message.content == "echo: one two three"
        assert time.monotonic() - started < 3, "an OpenAI request waited for the Anthropic front end to load"
        made = process.anthropic_client().messages.create(model="gpt", max_tokens=100, messages=QUESTION)
        assert made.content[0].type == "text" and made.content[0].text == "echo: one two three"
        assert _loads(process, "the Anthropic Messages front end") == 1  # the first request's load, finished
    assert ANTHROPIC_FRONTEND[0] in _loaded(modules)


def test_a_front_end_that_fails_to_load_is_a_503_in_its_apis_shape_that_the_sdk_retries(
    tmp_path: Path, fake_openai_process: Any
) -> None:
    modules = tmp_path / "modules.json"
    snapshot = _openai_only(fake_openai_process.base_url)
    with _sidecar(snapshot, modules, BROKEN_IMPORT=RESPONSES_FRONTEND[0]) as process:
        body = {"model": "gpt", "input": "one two three"}
        status, headers, error = _post(process.base_url + "/v1/responses", body)
        assert status == 503 and error["error"]["code"] == "frontend_unavailable", error
        assert error["error"]["message"].startswith("the sidecar could not load the OpenAI Responses front end")
        assert "Traceback" not in json.dumps(error) and "broken" not in json.dumps(error)
        assert int(headers["retry-after"]) >= 1
        # Another API is not affected; the app's SDK retries after the pause and is answered.
        assert process.openai_client().chat.completions.create(model="gpt", messages=QUESTION).choices
        retrying = process.openai_client().with_options(max_retries=2)
        assert retrying.responses.create(model="gpt", input="one two three").output_text == "echo: one two three"
        logs = process.logs()
        assert "could not load the OpenAI Responses front end" in logs and "is broken (a test)" in logs
    assert RESPONSES_FRONTEND[0] in _loaded(modules)


def test_a_messages_front_end_that_fails_to_load_answers_in_anthropics_shape(
    tmp_path: Path, fake_openai_process: Any
) -> None:
    modules = tmp_path / "modules.json"
    snapshot = _openai_only(fake_openai_process.base_url)
    with _sidecar(snapshot, modules, BROKEN_IMPORT=ANTHROPIC_FRONTEND[0]) as process:
        body = {"model": "gpt", "max_tokens": 100, "messages": QUESTION}
        status, headers, error = _post(process.base_url + "/v1/messages", body)
        assert status == 503 and error["type"] == "error" and error["error"]["type"] == "api_error", error
        assert "could not load the Anthropic Messages front end" in error["error"]["message"]
        assert int(headers["retry-after"]) >= 1
        retrying = process.anthropic_client().with_options(max_retries=2)
        made = retrying.messages.create(model="gpt", max_tokens=100, messages=QUESTION)
        assert made.content[0].type == "text" and made.content[0].text == "echo: one two three"
    assert ANTHROPIC_FRONTEND[0] in _loaded(modules)
