"""`make demo`: fake providers, one real sidecar, and the official SDKs talking through it.

Everything runs on this machine, offline: the providers are local fakes that
speak the OpenAI, Anthropic and Gemini wire formats; the sidecar is the real
`modelway-proxy` process. Each row of the table is one SDK call.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

import anthropic
import openai

from tests.fakes.process import FakeProviderProcess
from tests.integration.snapshots import build_snapshot
from tests.integration.sidecar import SidecarProcess

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}]


@dataclass
class Row:
    what: str
    sdk: str
    route: str
    served_by: str
    answer: str
    tokens: str
    ms: float


def _openai_plain(client: openai.OpenAI, route: str, text: str) -> tuple[str, str, str]:
    reply = client.chat.completions.create(model=route, messages=[{"role": "user", "content": text}])
    usage = reply.usage
    return reply.model, reply.choices[0].message.content or "", f"{usage.prompt_tokens}/{usage.completion_tokens}"


def _openai_stream(client: openai.OpenAI, route: str, text: str) -> tuple[str, str, str]:
    stream = client.chat.completions.create(model=route, messages=[{"role": "user", "content": text}], stream=True,
                                            stream_options={"include_usage": True})
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
    return reply.model, f"{call.function.name}({call.function.arguments})", \
        f"{reply.usage.prompt_tokens}/{reply.usage.completion_tokens}"


def _anthropic_stream(client: anthropic.Anthropic, route: str, text: str) -> tuple[str, str, str]:
    with client.messages.stream(model=route, max_tokens=256, messages=[{"role": "user", "content": text}]) as stream:
        parts = list(stream.text_stream)
        final = stream.get_final_message()
    return final.model, f"{''.join(parts)}  ({len(parts)} chunks)", \
        f"{final.usage.input_tokens}/{final.usage.output_tokens}"


def main() -> int:
    started = time.monotonic()
    print("Starting fake OpenAI, Anthropic and Gemini providers and the modelway-proxy sidecar...", flush=True)
    with ExitStack() as stack:
        fakes = {name: stack.enter_context(FakeProviderProcess(name)) for name in ("openai", "anthropic", "gemini")}
        snapshot = build_snapshot(fakes["openai"].base_url, fakes["anthropic"].base_url, fakes["gemini"].base_url)
        sidecar = stack.enter_context(SidecarProcess(snapshot))
        print(f"sidecar on {sidecar.base_url} (admin {sidecar.admin_url}), "
              f"snapshot {sidecar.admin('/readyz')[1]['version']}\n", flush=True)
        oai = openai.OpenAI(base_url=sidecar.base_url + "/v1", api_key="placeholder", max_retries=0)
        claude = anthropic.Anthropic(base_url=sidecar.base_url, api_key="placeholder", max_retries=0)

        calls: list[tuple[str, str, str, Callable[[], tuple[str, str, str]]]] = [
            ("plain chat", "openai", "gpt", lambda: _openai_plain(oai, "gpt", "hello from the demo")),
            ("OpenAI SDK to Anthropic, streamed", "openai", "claude",
             lambda: _openai_stream(oai, "claude", "tell me a story")),
            ("OpenAI SDK to Gemini", "openai", "gemini", lambda: _openai_plain(oai, "gemini", "hi Gemini")),
            ("Anthropic SDK to OpenAI, streamed", "anthropic", "gpt",
             lambda: _anthropic_stream(claude, "gpt", "stream me some words")),
            ("tool call via Anthropic backend", "openai", "claude",
             lambda: _openai_tool(oai, "claude", "use tool weather in Lisbon")),
            ("Azure OpenAI deployment", "openai", "azure", lambda: _openai_plain(oai, "azure", "hello Azure")),
        ]
        rows = [_run(what, sdk, route, call) for what, sdk, route, call in calls]

        fakes["openai"].script([{"status": 503, "message": "the primary is overloaded"}])
        rows.append(_run("OpenAI fails (503), falls back", "openai", "resilient",
                         lambda: _openai_plain(oai, "resilient", "are you there")))
        fakes["openai"].script([{"status": 500}])
        fakes["anthropic"].script([{"status": 529}])
        rows.append(_run("every backend fails", "openai", "doomed",
                         lambda: _openai_plain(oai, "doomed", "anyone?")))
    _print_table(rows)
    print(f"\n{len(rows)} calls in {time.monotonic() - started:.1f}s. The sidecar's config dump "
          "(secrets masked) is at /config on its admin port.")
    return 0


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
    cells = [[r.what, r.sdk, r.route, r.served_by, _short(r.answer), r.tokens, "ms" if r is header else f"{r.ms:.0f}"]
             for r in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for i, row in enumerate(cells):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * width for width in widths))


if __name__ == "__main__":
    sys.exit(main())
