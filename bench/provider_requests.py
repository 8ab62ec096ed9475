"""What a provider type costs the sidecar per request, in one run: building the upstream request
(translation, and for Bedrock SigV4 signing) and decoding a streamed answer of the same content
(OpenAI SSE, Anthropic SSE, Bedrock's binary event stream with its CRC checks), side by side.

Rounds alternate the types' order; medians are shown, with each type's ratio to OpenAI's (the
pass-through baseline measured in the same run).

    python -m bench.provider_requests [--calls 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

from proxy.providers.aws_eventstream import encode_message
from proxy.providers.registry import build_translator
from proxy.snapshot import AwsKeys, BedrockSettings, Provider

REQUEST = {
    "model": "bench",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Summarise the attached notes in three bullet points. " * 20},
    ],
    "max_tokens": 300,
    "temperature": 0.2,
}
WORDS = [f"word{i} " for i in range(200)]

PROVIDERS = {
    "openai": Provider(name="b.openai", type="openai", base_url="https://api.openai.com/v1", api_key="sk-bench"),
    "anthropic": Provider(name="b.anthropic", type="anthropic", base_url="https://api.anthropic.com", api_key="sk-ant"),
    "bedrock": Provider(
        name="b.bedrock",
        type="bedrock",
        base_url="https://bedrock-runtime.eu-central-1.amazonaws.com",
        bedrock=BedrockSettings(
            region="eu-central-1",
            credentials=AwsKeys(access_key_id="AKIABENCHBENCHBENCH0", secret_access_key="bench/secret/key+0123456789"),
        ),
    ),
}


def _sse(data: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def _streams() -> dict[str, bytes]:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    usage = {"prompt_tokens": 10, "completion_tokens": 200, "total_tokens": 210}
    openai = (
        b"".join(
            _sse({**chunk, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}) for w in WORDS
        )
        + _sse({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage})
        + b"data: [DONE]\n\n"
    )
    anthropic = (
        _sse({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
              "model": "m", "content": [], "stop_reason": None, "usage": {"input_tokens": 10, "output_tokens": 1}}},
             "message_start")
        + _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
               "content_block_start")
        + b"".join(_sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}},
                        "content_block_delta") for w in WORDS)
        + _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        + _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 200}},
               "message_delta")
        + _sse({"type": "message_stop"}, "message_stop")
    )  # fmt: skip

    def event(kind: str, payload: dict[str, object]) -> bytes:
        headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
        return encode_message(headers, json.dumps({**payload, "p": "abcdefgh"}).encode())

    bedrock = (
        event("messageStart", {"role": "assistant"})
        + b"".join(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": w}}) for w in WORDS)
        + event("contentBlockStop", {"contentBlockIndex": 0})
        + event("messageStop", {"stopReason": "end_turn"})
        + event("metadata", {"usage": {"inputTokens": 10, "outputTokens": 200, "totalTokens": 210}})
    )
    return {"openai": openai, "anthropic": anthropic, "bedrock": bedrock}


def _per_call(fn: Callable[[], object], calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    translators = {name: build_translator(p) for name, p in PROVIDERS.items()}
    streams = _streams()
    reads = {name: [data[i : i + 1400] for i in range(0, len(data), 1400)] for name, data in streams.items()}

    def build(name: str) -> Callable[[], object]:
        translator = translators[name]
        return lambda: translator.chat_request(REQUEST, model="bench-model:0", stream=True)

    def decode(name: str) -> Callable[[], object]:
        translator = translators[name]

        def run() -> None:
            decoder = translator.stream_decoder(model="m")
            for part in reads[name]:
                decoder.feed(part)
            decoder.close()

        return run

    names = list(PROVIDERS)
    figures: dict[str, dict[str, list[float]]] = {"request": {n: [] for n in names}, "stream": {n: [] for n in names}}
    for round_number in range(args.rounds):
        order = names if round_number % 2 == 0 else names[::-1]
        for name in order:
            figures["request"][name].append(_per_call(build(name), args.calls))
            figures["stream"][name].append(_per_call(decode(name), max(1, args.calls // 50)))
    print(f"load: {os.getloadavg()[0]:.2f} (1 min), {args.rounds} rounds, medians")
    for what, label in (("request", "build the upstream request"), ("stream", f"decode a {len(WORDS)}-event stream")):
        base = statistics.median(figures[what]["openai"])
        for name in names:
            value = statistics.median(figures[what][name])
            print(f"  {label:32} {name:10} {value:9.1f} µs   x{value / base:.2f} of openai")


if __name__ == "__main__":
    main()
