"""What the same-API pass-through costs per request and per streamed event, beside today's paths.

In one process, one run, best of several rounds (the machine is shared: compare within a run):

  - request: an Anthropic Messages body to an Anthropic backend, passed through
    (`passthrough_request`) and translated (front end parse + `chat_request`), and an OpenAI body to
    OpenAI (`chat_request`, what the OpenAI path does today);
  - stream: one answer's SSE events decoded and re-encoded for the app: Anthropic passed through
    (`RawEventDecoder` + raw encoder), Anthropic translated (decoder + Anthropic encoder), and
    OpenAI to an OpenAI app (decoder + encoder writing the provider's bytes).

Target: the pass-through costs no more than the OpenAI path.

    python -m bench.passthrough [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from proxy.frontends.anthropic_messages import AnthropicFrontend
from proxy.frontends.openai_chat import OpenAIFrontend
from proxy.providers.anthropic import AnthropicTranslator
from proxy.providers.openai import OpenAITranslator
from proxy.snapshot import Provider

CLAUDE = AnthropicTranslator(Provider(name="c", type="anthropic", base_url="https://a.example", api_key="k"))
OPENAI = OpenAITranslator(Provider(name="o", type="openai", base_url="https://o.example/v1", api_key="k"))
WORDS = [f"word{i} " for i in range(200)]  # one answer of 200 text deltas

ANTHROPIC_BODY: dict[str, Any] = {
    "model": "claude",
    "max_tokens": 1024,
    "system": [{"type": "text", "text": "be brief " * 50, "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": "hello " * 200}, {"role": "assistant", "content": "hi"}] * 4
    + [{"role": "user", "content": "and now?"}],
}
OPENAI_BODY: dict[str, Any] = {
    "model": "gpt",
    "messages": [{"role": "system", "content": "be brief " * 50}]
    + [{"role": "user", "content": "hello " * 200}, {"role": "assistant", "content": "hi"}] * 4
    + [{"role": "user", "content": "and now?"}],
}


def _sse(name: str | None, data: dict[str, Any]) -> bytes:
    head = f"event: {name}\n" if name else ""
    return (head + "data: " + json.dumps(data, separators=(",", ":")) + "\n\n").encode()


def anthropic_stream() -> bytes:
    start = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": []}
    start["usage"] = {"input_tokens": 10, "output_tokens": 1}
    events = [_sse("message_start", {"type": "message_start", "message": start})]
    events.append(
        _sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
    )
    for word in WORDS:
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}
        events.append(_sse("content_block_delta", delta))
    events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(
        _sse(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 200}},
        )
    )
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return b"".join(events)


def openai_stream() -> bytes:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    events = [
        _sse(
            None,
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        )
    ]
    for word in WORDS:
        events.append(
            _sse(None, {**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]})
        )
    events.append(_sse(None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    usage = {"prompt_tokens": 10, "completion_tokens": 200, "total_tokens": 210}
    events.append(_sse(None, {**base, "choices": [], "usage": usage}))
    return b"".join(events) + b"data: [DONE]\n\n"


def relay(decoder: Any, encoder: Any, body: bytes, read: int = 4096) -> int:
    """The relay's work on one answer arriving in reads of `read` bytes: decode, encode, join."""
    out = 0
    for i in range(0, len(body), read):
        out += len(b"".join([encoder.encode(c) for c in decoder.feed(body[i : i + read])]))
    out += len(b"".join([encoder.encode(c) for c in decoder.close()]))
    return out + len(encoder.finish())


def best_of(fns: dict[str, Callable[[], object]], *, rounds: int, number: int) -> dict[str, float]:
    """Best per-call seconds of each over `rounds` rounds of `number` calls, the variants interleaved
    round by round (a drift in the machine's load hits them alike)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(number):
                fn()
            times[name].append((time.perf_counter() - start) / number)
    return {name: min(found) for name, found in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    anthropic_frontend, openai_frontend = AnthropicFrontend(), OpenAIFrontend()
    a_body, o_body = anthropic_stream(), openai_stream()
    passing = CLAUDE.passthrough_request
    requests = {
        # (the body is parsed into the internal form on the pass-through too: classify and admit read it)
        "anthropic passed through": lambda: passing(
            anthropic_frontend.parse_chat(ANTHROPIC_BODY).original or {}, model="m", stream=True, headers={}
        ),
        "anthropic translated": lambda: CLAUDE.chat_request(
            anthropic_frontend.parse_chat(ANTHROPIC_BODY).request, model="m", stream=True
        ),
        "openai (today)": lambda: OPENAI.chat_request(
            openai_frontend.parse_chat(OPENAI_BODY).request, model="m", stream=True
        ),
    }
    streams = {
        "anthropic passed through": lambda: relay(
            CLAUDE.passthrough_decoder(model="m"), anthropic_frontend_raw_encoder(), a_body
        ),
        "anthropic translated": lambda: relay(
            CLAUDE.stream_decoder(model="m"), anthropic_frontend.stream_encoder(include_usage=True), a_body
        ),
        "openai (today)": lambda: relay(
            OPENAI.stream_decoder(model="m"), openai_frontend.stream_encoder(include_usage=False), o_body
        ),
    }
    print(f"request build (parse + body), best of {args.rounds} rounds:")
    request_us = {name: s * 1e6 for name, s in best_of(requests, rounds=args.rounds, number=2000).items()}
    for name, us in request_us.items():
        print(f"  {name:28s} {us:8.1f} us")
    print(f"stream of {len(WORDS)} deltas (decode + encode), best of {args.rounds} rounds:")
    stream_us = {name: s * 1e6 for name, s in best_of(streams, rounds=args.rounds, number=50).items()}
    events = len(WORDS) + 5
    for name, us in stream_us.items():
        print(f"  {name:28s} {us:8.1f} us/answer  {us / events:6.2f} us/event")
    request_ratio = request_us["anthropic passed through"] / request_us["openai (today)"]
    stream_ratio = stream_us["anthropic passed through"] / stream_us["openai (today)"]
    ok = request_ratio <= 1.1 and stream_ratio <= 1.1
    print(f"pass-through / OpenAI path: request {request_ratio:.2f}, stream {stream_ratio:.2f}")
    print(f"target (pass-through no costlier than the OpenAI path, within 10%): {'met' if ok else 'MISSED'}")
    return 0


def anthropic_frontend_raw_encoder() -> Any:
    from proxy.frontends.anthropic_stream import AnthropicStreamEncoder
    from proxy.request.passthrough import _RawEventEncoder

    return _RawEventEncoder(AnthropicStreamEncoder().error)


if __name__ == "__main__":
    raise SystemExit(main())
