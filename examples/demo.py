"""`make demo`: fake providers, `modelway dev` (controller + sidecar), and the official SDKs.

Everything runs on this machine, offline: the providers are local fakes that
speak the OpenAI, Anthropic and Gemini wire formats; the controller reads the
YAML in examples/dev/ and pushes it to a real `modelway-proxy` sidecar. Each
row of the table is one SDK call; the last one runs after an edit of the YAML.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import anthropic
import openai

from tests.fakes.process import FakeProviderProcess

REPO = Path(__file__).resolve().parents[1]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        },
    }
]


@dataclass
class Row:
    what: str
    sdk: str
    route: str
    served_by: str
    answer: str
    tokens: str
    ms: float


def _openai_plain(
    client: openai.OpenAI, route: str, text: str, headers: dict[str, str] | None = None
) -> tuple[str, str, str]:
    reply = client.chat.completions.create(
        model=route, messages=[{"role": "user", "content": text}], extra_headers=headers
    )
    usage = reply.usage
    return reply.model, reply.choices[0].message.content or "", f"{usage.prompt_tokens}/{usage.completion_tokens}"


def _openai_stream(client: openai.OpenAI, route: str, text: str) -> tuple[str, str, str]:
    stream = client.chat.completions.create(
        model=route, messages=[{"role": "user", "content": text}], stream=True, stream_options={"include_usage": True}
    )
    model, parts, tokens = "", [], ""
    for chunk in stream:
        model = chunk.model or model
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            tokens = f"{chunk.usage.prompt_tokens}/{chunk.usage.completion_tokens}"
    return model, f"{''.join(parts)}  ({len(parts)} chunks)", tokens


def _openai_tool(client: openai.OpenAI, route: str, text: str) -> tuple[str, str, str]:
    reply = client.chat.completions.create(model=route, messages=[{"role": "user", "content": text}], tools=TOOLS)
    call = reply.choices[0].message.tool_calls[0]
    return (
        reply.model,
        f"{call.function.name}({call.function.arguments})",
        f"{reply.usage.prompt_tokens}/{reply.usage.completion_tokens}",
    )


def _anthropic_stream(client: anthropic.Anthropic, route: str, text: str) -> tuple[str, str, str]:
    with client.messages.stream(model=route, max_tokens=256, messages=[{"role": "user", "content": text}]) as stream:
        parts = list(stream.text_stream)
        final = stream.get_final_message()
    return (
        final.model,
        f"{''.join(parts)}  ({len(parts)} chunks)",
        f"{final.usage.input_tokens}/{final.usage.output_tokens}",
    )


FAKE_PORTS = {"openai": 18081, "anthropic": 18082, "gemini": 18083}  # as in examples/dev/providers.yaml
SIDECAR_PORT, ADMIN_PORT, CONTROLLER_PORT = 15000, 15020, 15012


def _admin(path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN_PORT}{path}", timeout=5) as resp:
        return json.loads(resp.read())


def _wait_ready(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"modelway dev exited with {process.returncode}; its output is above")
        try:
            _admin("/readyz")
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("modelway dev did not become ready in time")


def _switch_route(config_dir: Path, previous_version: str) -> None:
    """Edit routes.yaml as a person would, and wait until the sidecar runs the new rules."""
    routes = config_dir / "routes.yaml"
    routes.write_text(
        routes.read_text().replace(
            "        - {provider: openai, model: gpt-4o}\n      fallbacks:",
            "        - {provider: gemini, model: gemini-2.5-flash}\n      fallbacks:",
            1,
        )
    )
    deadline = time.monotonic() + 10
    while _admin("/readyz")["version"] == previous_version and time.monotonic() < deadline:
        time.sleep(0.05)


def main() -> int:
    started = time.monotonic()
    print(
        "Starting fake OpenAI, Anthropic and Gemini providers, then `modelway dev` "
        "(the controller and a sidecar) on examples/dev/ ...",
        flush=True,
    )
    with ExitStack() as stack:
        fakes = {name: stack.enter_context(FakeProviderProcess(name, port=port)) for name, port in FAKE_PORTS.items()}
        config_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="modelway-demo-")))
        for source in (REPO / "examples" / "dev").glob("*.yaml"):
            shutil.copy(source, config_dir / source.name)
        dev = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controller.dev",
                "dev",
                "--config-dir",
                str(config_dir),
                "--log-level",
                "warning",
                "--port",
                str(SIDECAR_PORT),
                "--admin-port",
                str(ADMIN_PORT),
                "--controller-port",
                str(CONTROLLER_PORT),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        stack.callback(_stop, dev)
        _wait_ready(dev)
        version = _admin("/readyz")["version"]
        print(f"sidecar on http://127.0.0.1:{SIDECAR_PORT}, snapshot {version} from the controller\n", flush=True)
        oai = openai.OpenAI(base_url=f"http://127.0.0.1:{SIDECAR_PORT}/v1", api_key="placeholder", max_retries=0)
        claude = anthropic.Anthropic(base_url=f"http://127.0.0.1:{SIDECAR_PORT}", api_key="placeholder", max_retries=0)

        calls: list[tuple[str, str, str, Callable[[], tuple[str, str, str]]]] = [
            ("plain chat", "openai", "chat", lambda: _openai_plain(oai, "chat", "hello from the demo")),
            (
                "OpenAI SDK to Anthropic, streamed",
                "openai",
                "claude",
                lambda: _openai_stream(oai, "claude", "tell me a story"),
            ),
            ("OpenAI SDK to Gemini", "openai", "gemini", lambda: _openai_plain(oai, "gemini", "hi Gemini")),
            (
                "Anthropic SDK to OpenAI, streamed",
                "anthropic",
                "chat",
                lambda: _anthropic_stream(claude, "chat", "stream me some words"),
            ),
            (
                "tool call via Anthropic backend",
                "openai",
                "claude",
                lambda: _openai_tool(oai, "claude", "use tool weather in Lisbon"),
            ),
            ("Azure OpenAI deployment", "openai", "azure", lambda: _openai_plain(oai, "azure", "hello Azure")),
            (
                "no personal data: OpenAI (US)",
                "openai",
                "assistant",
                lambda: _openai_plain(oai, "assistant", "draft a haiku about tea"),
            ),
            (
                "e-mail in the prompt: kept in the EU",
                "openai",
                "assistant",
                lambda: _openai_plain(oai, "assistant", "write to ana@example.eu about her order"),
            ),
            (
                "marked personal, no EU backend: refused",
                "openai",
                "chat",
                lambda: _openai_plain(oai, "chat", "hello", {"x-modelway-data-class": "personal"}),
            ),
        ]
        rows = [_run(what, sdk, route, call) for what, sdk, route, call in calls]

        fakes["openai"].script([{"status": 503, "message": "the primary is overloaded"}])
        rows.append(
            _run(
                "OpenAI fails (503), falls back", "openai", "chat", lambda: _openai_plain(oai, "chat", "are you there")
            )
        )
        fakes["openai"].script([{"status": 500}])
        fakes["anthropic"].script([{"status": 529}])
        rows.append(_run("every backend fails", "openai", "doomed", lambda: _openai_plain(oai, "doomed", "anyone?")))
        _switch_route(config_dir, version)
        rows.append(
            _run(
                "routes.yaml edited: chat -> Gemini",
                "openai",
                "chat",
                lambda: _openai_plain(oai, "chat", "where do you run now"),
            )
        )
    _print_table(rows)
    print(
        f"\n{len(rows)} calls in {time.monotonic() - started:.1f}s. Try it yourself: "
        "`modelway dev --config-dir examples/dev` (fakes: `python -m tests.fakes --provider openai --port 18081`)."
    )
    return 0


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def _run(what: str, sdk: str, route: str, call: Callable[[], tuple[str, str, str]]) -> Row:
    started = time.perf_counter()
    try:
        served_by, answer, tokens = call()
    except openai.APIStatusError as exc:
        served_by, answer, tokens = f"HTTP {exc.status_code}", _short(exc.message), "-"
    return Row(what, sdk, route, served_by, answer, tokens, (time.perf_counter() - started) * 1000)


def _short(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _print_table(rows: list[Row]) -> None:
    header = Row("what", "sdk", "model", "served by", "answer", "tokens in/out", 0)
    cells = [
        [r.what, r.sdk, r.route, r.served_by, _short(r.answer), r.tokens, "ms" if r is header else f"{r.ms:.0f}"]
        for r in [header, *rows]
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for i, row in enumerate(cells):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * width for width in widths))


if __name__ == "__main__":
    sys.exit(main())
