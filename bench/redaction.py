"""What reversible masking costs: per 10 KB of prompt, and per streamed answer of ~200 deltas.

Masking (`Pseudonymizer.redact_chat`) is timed on ~10 KB requests (prose
with a finding every ~2 KB, the same prose without findings, an agent
request with tools and tool calls), next to what the same request already
costs without masking, in the same run: `orjson.dumps` of it (what sending it
costs anyway) and the classifier's personal-data scan (`chat_texts` +
`scan`, paid by workloads that detect personal data).

Restoring is timed on a streamed answer of 200 content deltas (about 5
characters each, as models stream), through the real OpenAI stream decoder
and each front end's encoder, with and without a `RestoringEncoder` in
between: an answer with no placeholder (what most answers are: the
restorer's fast path) and one that repeats 20 placeholders, each split
across two deltas. A tool call's arguments of 200 deltas are timed too.

Figures are the best of 5 rounds of this process's CPU time (other load on a
shared machine does not count against them), in microseconds. Exit 1 only
when a restored answer is not exactly the original.

    python -m bench.redaction
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

import orjson

from bench.personal_data import PLANTED, PROSE, agent_request, repeat_to, with_findings
from bench.sidecar_setup import cpu_model
from proxy.frontends.anthropic_stream import AnthropicStreamEncoder
from proxy.frontends.base import StreamEncoder
from proxy.frontends.openai_chat import OpenAIStreamEncoder
from proxy.policy.classify import chat_texts
from proxy.policy.personal_data import PersonalDataDetector
from proxy.providers.openai import OpenAIStreamDecoder
from proxy.redaction import Pseudonymizer, RedactionRule, StreamRestorer, restoring_encoder

ROUNDS = 5
ROUND_SECONDS = 0.05
SIZE = 10 << 10
DELTAS = 200


def best_us(fn: Callable[[], object]) -> float:
    timer = timeit.Timer(fn, timer=time.process_time)
    number = max(1, int(ROUND_SECONDS / max(1e-7, min(timer.repeat(repeat=2, number=1)))))
    return min(timer.repeat(repeat=ROUNDS, number=number)) / number * 1e6


# --- prompts -------------------------------------------------------------------------------------


def chat(text: str) -> dict[str, Any]:
    return {
        "model": "chat",
        "messages": [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": text}],
    }


def agent_10kb(rng: random.Random) -> dict[str, Any]:
    request = agent_request(rng)
    messages = request["messages"]
    assert isinstance(messages, list)
    tools = request["tools"]
    assert isinstance(tools, list)
    del tools[4:]  # 4 tools with their schemas, and as many turns as fit in 10 KB
    while len(orjson.dumps(request)) > SIZE - 300 and len(messages) > 4:
        del messages[-3:]  # whole turns (user, call, result)
    messages.append({"role": "user", "content": f"Also tell {PLANTED[0]}"})
    return request


def prompt_table(rule: RedactionRule) -> None:
    detector = PersonalDataDetector()
    requests = {
        "prose, a finding per 2 KB": chat(with_findings(PROSE, SIZE)[0]),
        "prose, no findings": chat(repeat_to(PROSE, SIZE)),
        "agent: tools and tool calls": agent_10kb(random.Random(7)),
    }
    rule_line = "-" * 90
    print(rule_line)
    print(
        f"{'request (~10 KB)':<30}{'KB':>6}{'found':>7} | {'dumps':>8} {'scan':>8} | {'redact':>8} "
        f"{'us/10KB':>8} {'x scan':>7}"
    )
    print(rule_line)
    for name, request in requests.items():
        size = len(orjson.dumps(request))
        found = sum(Pseudonymizer(rule).redact_chat(request).counts.values())
        dumps = best_us(lambda request=request: orjson.dumps(request))
        scan = best_us(lambda request=request: detector.scan(chat_texts(request)))
        redact = best_us(lambda request=request: Pseudonymizer(rule).redact_chat(request))
        print(
            f"{name:<30}{size / 1024:>6.1f}{found:>7} | {dumps:>8.1f} {scan:>8.1f} | {redact:>8.1f} "
            f"{redact * SIZE / size:>8.1f} {redact / scan:>6.1f}x"
        )
    print(rule_line)
    print("us per request, best of 5; dumps: orjson.dumps of the request (paid anyway); scan: the classifier's scan")


# --- streamed answers ----------------------------------------------------------------------------

VALUES = {f"<EMAIL_{n}>": f"customer.{n}@example-mail.com" for n in range(1, 21)}


def answer_deltas(with_placeholders: bool) -> list[str]:
    words = repeat_to("The order was shipped on time and the refund is on its way. ", DELTAS * 5)
    deltas = [words[i : i + 5] for i in range(0, len(words), 5)]
    if with_placeholders:  # 20 placeholders, each split in two across neighbouring deltas
        for n in range(1, 21):
            at = n * (DELTAS // 21)
            placeholder = f"<EMAIL_{n}>"
            deltas[at] = deltas[at][:2] + placeholder[:4]
            deltas[at + 1] = placeholder[4:] + deltas[at + 1][2:]
    return deltas


def sse(deltas: list[str], *, arguments: bool = False) -> bytes:
    events = []
    for index, text in enumerate(deltas):
        delta: dict[str, Any] = {"content": text}
        if arguments:
            call: dict[str, Any] = {"index": 0, "function": {"arguments": text}}
            if index == 0:
                call.update(id="call_1", type="function", function={"name": "send", "arguments": text})
            delta = {"tool_calls": [call]}
        events.append(
            {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": delta}]}
        )
    events.append(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
    )
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def events_of(body: bytes) -> list[bytes]:
    """The body as the relay reads it: one read per event (the worst case for per-read costs)."""
    return [event + b"\n\n" for event in body.split(b"\n\n") if event]


def relay(reads: list[bytes], encoder: StreamEncoder) -> bytes:
    decoder = OpenAIStreamDecoder()
    out = [b"".join([encoder.encode(chunk) for chunk in decoder.feed(data)]) for data in reads]
    out += [encoder.encode(chunk) for chunk in decoder.close()]
    return b"".join(out) + encoder.finish()


def restored_text(out: bytes) -> str:
    text = ""
    for event in out.split(b"\n\n"):
        for line in event.split(b"\n"):
            if line.startswith(b"data: {"):
                data = orjson.loads(line[6:])
                if data.get("choices"):
                    text += data["choices"][0]["delta"].get("content") or ""
                elif data.get("type") == "content_block_delta":
                    text += data["delta"].get("text", "")
    return text


def stream_table() -> list[str]:
    problems = []
    encoders: dict[str, Callable[[], StreamEncoder]] = {
        "OpenAI": lambda: OpenAIStreamEncoder(include_usage=False),
        "Anthropic": AnthropicStreamEncoder,
    }
    rule_line = "-" * 92
    print(rule_line)
    print(
        f"{'streamed answer, 200 deltas':<34}{'front end':<11} | {'plain':>8} {'restoring':>10} | "
        f"{'added':>7} {'per delta':>10}"
    )
    print(rule_line)
    cases = {
        "text, no placeholder": (answer_deltas(False), False),
        "text, 20 split placeholders": (answer_deltas(True), False),
        "tool arguments, 20 split": (answer_deltas(True), True),
    }
    for name, (deltas, arguments) in cases.items():
        reads = events_of(sse(deltas, arguments=arguments))
        expected = "".join(deltas)
        for placeholder, value in VALUES.items():
            expected = expected.replace(placeholder, value)
        for front, make in encoders.items():
            if arguments and front == "Anthropic":
                continue
            plain = best_us(lambda reads=reads, make=make: relay(reads, make()))
            restoring = best_us(
                lambda reads=reads, make=make: relay(reads, restoring_encoder(make(), StreamRestorer(VALUES)))
            )
            if not arguments:
                got = restored_text(relay(reads, restoring_encoder(make(), StreamRestorer(VALUES))))
                if got != expected:
                    problems.append(f"{name} ({front}): restored text differs")
            print(
                f"{name:<34}{front:<11} | {plain:>8.1f} {restoring:>10.1f} | {restoring - plain:>7.1f} "
                f"{(restoring - plain) / DELTAS:>10.2f}"
            )
    print(rule_line)
    print("us per answer (decode, restore, encode), best of 5; added = restoring - plain, in the same run")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redaction", description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    rule = RedactionRule()
    print("Modelway redaction: masking per 10 KB of prompt, restoring per streamed answer; against no redaction")
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
        f"Python {sys.version.split()[0]}"
    )
    prompt_table(rule)
    problems = stream_table()
    for problem in problems:
        print(f"BROKEN: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
