"""Hypothesis strategies for provider answers: the documented shapes, with any field swapped for any
JSON (or left out), framed as SSE and cut at arbitrary byte boundaries; and what a well-typed result
of a decoder looks like, written apart from the checks under test."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
ANY_JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
MISSING = object()


def field(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the documented value; sometimes any JSON, sometimes absent."""
    return st.one_of(*[good] * 8, ANY_JSON, st.just(MISSING))


def shaped(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({k: field(v) for k, v in fields.items()}).map(
        lambda d: {k: v for k, v in d.items() if v is not MISSING}
    )


COUNT = st.integers(min_value=0, max_value=10**6)
NAME = st.text(min_size=1, max_size=12)

# --- OpenAI ------------------------------------------------------------------------------------

OPENAI_USAGE = shaped(
    prompt_tokens=COUNT, completion_tokens=COUNT, total_tokens=COUNT, prompt_tokens_details=shaped(cached_tokens=COUNT)
)
OPENAI_TOOL_CALL = shaped(
    index=st.integers(0, 3),
    id=NAME,
    type=st.just("function"),
    function=shaped(name=NAME, arguments=st.text(max_size=10)),
)
OPENAI_DELTA = shaped(
    role=st.just("assistant"),
    content=st.text(max_size=10) | st.none(),
    tool_calls=st.lists(OPENAI_TOOL_CALL, max_size=2),
    refusal=st.none(),
)
OPENAI_CHUNK = shaped(
    id=NAME,
    object=st.just("chat.completion.chunk"),
    created=COUNT,
    model=NAME,
    choices=st.lists(
        shaped(index=st.integers(0, 2), delta=OPENAI_DELTA, finish_reason=st.sampled_from(["stop", "length", None])),
        max_size=2,
    ),
    usage=OPENAI_USAGE | st.none(),
)
OPENAI_MESSAGE = shaped(
    role=st.just("assistant"),
    content=st.text(max_size=10) | st.none(),
    tool_calls=st.lists(OPENAI_TOOL_CALL, max_size=2),
)
OPENAI_COMPLETION = shaped(
    id=NAME,
    object=st.just("chat.completion"),
    created=COUNT,
    model=NAME,
    choices=st.lists(
        shaped(index=st.integers(0, 2), message=OPENAI_MESSAGE, finish_reason=st.sampled_from(["stop", "tool_calls"])),
        max_size=2,
    ),
    usage=OPENAI_USAGE,
)
FLOATS = st.lists(st.floats(-2, 2, allow_nan=False), max_size=4)
OPENAI_EMBEDDINGS = shaped(
    object=st.just("list"),
    model=NAME,
    usage=OPENAI_USAGE,
    data=st.lists(
        shaped(object=st.just("embedding"), index=st.integers(0, 3), embedding=FLOATS | st.just("AAAAAA==")), max_size=3
    ),
)

# --- Anthropic ---------------------------------------------------------------------------------

ANTHROPIC_USAGE = shaped(input_tokens=COUNT, output_tokens=COUNT, cache_read_input_tokens=COUNT)
ANTHROPIC_BLOCK = st.one_of(
    shaped(type=st.just("text"), text=st.text(max_size=10)),
    shaped(
        type=st.just("tool_use"),
        id=NAME,
        name=NAME,
        input=st.dictionaries(st.text(max_size=4), JSON_SCALARS, max_size=2),
    ),
    shaped(type=st.just("thinking"), thinking=st.text(max_size=5)),
)
ANTHROPIC_MESSAGE = shaped(
    id=NAME,
    type=st.just("message"),
    role=st.just("assistant"),
    model=NAME,
    content=st.lists(ANTHROPIC_BLOCK, max_size=3),
    stop_reason=st.sampled_from(["end_turn", "tool_use", "max_tokens"]),
    usage=ANTHROPIC_USAGE,
)
ANTHROPIC_EVENT = st.one_of(
    shaped(type=st.just("message_start"), message=ANTHROPIC_MESSAGE),
    shaped(type=st.just("content_block_start"), index=st.integers(0, 2), content_block=ANTHROPIC_BLOCK),
    shaped(
        type=st.just("content_block_delta"),
        index=st.integers(0, 2),
        delta=st.one_of(
            shaped(type=st.just("text_delta"), text=st.text(max_size=8)),
            shaped(type=st.just("input_json_delta"), partial_json=st.text(max_size=8)),
        ),
    ),
    shaped(type=st.just("content_block_stop"), index=st.integers(0, 2)),
    shaped(
        type=st.just("message_delta"),
        delta=shaped(stop_reason=st.sampled_from(["end_turn", "tool_use"])),
        usage=ANTHROPIC_USAGE,
    ),
    shaped(type=st.just("message_stop")),
    shaped(type=st.just("ping")),
    shaped(type=st.just("error"), error=shaped(type=NAME, message=st.text(max_size=8))),
)


def anthropic_stream_events() -> st.SearchStrategy[list[dict[str, Any]]]:
    """A plausible run (start, blocks, stop) with events mutated, dropped or added."""
    start = shaped(type=st.just("message_start"), message=ANTHROPIC_MESSAGE)
    stop = st.just({"type": "message_stop"})
    return st.tuples(start, st.lists(ANTHROPIC_EVENT, max_size=6), stop).map(lambda t: [t[0], *t[1], t[2]])


# --- Gemini ------------------------------------------------------------------------------------

GEMINI_PART = st.one_of(
    shaped(text=st.text(max_size=8), thought=st.booleans()),
    shaped(
        functionCall=shaped(name=NAME, id=NAME, args=st.dictionaries(st.text(max_size=4), JSON_SCALARS, max_size=2)),
        thoughtSignature=st.text(max_size=6),
    ),
)
GEMINI_CANDIDATE = shaped(
    content=shaped(role=st.just("model"), parts=st.lists(GEMINI_PART, max_size=3)),
    finishReason=st.sampled_from(["STOP", "MAX_TOKENS", "SAFETY", "OTHER"]),
    index=st.integers(0, 2),
)
GEMINI_RESPONSE = shaped(
    candidates=st.lists(GEMINI_CANDIDATE, max_size=2),
    responseId=NAME,
    modelVersion=NAME,
    usageMetadata=shaped(
        promptTokenCount=COUNT,
        candidatesTokenCount=COUNT,
        thoughtsTokenCount=COUNT,
        totalTokenCount=COUNT,
        cachedContentTokenCount=COUNT,
    ),
    promptFeedback=shaped(blockReason=st.sampled_from(["SAFETY", "OTHER"])),
)
GEMINI_EMBEDDINGS = st.one_of(
    shaped(embedding=shaped(values=FLOATS)),
    shaped(embeddings=st.lists(shaped(values=FLOATS), max_size=3)),
    shaped(embedding=shaped(values=FLOATS), usageMetadata=shaped(promptTokenCount=COUNT)),
)

# --- bytes on the wire -------------------------------------------------------------------------


def encoded(event: Any) -> bytes:
    return json.dumps(event).encode()


def sse_body(events: list[bytes], *, crlf: bool, named: list[str] | None = None) -> bytes:
    end = b"\r\n" if crlf else b"\n"
    out = []
    for i, data in enumerate(events):
        name = named[i] if named else None
        head = b"event: " + name.encode() + end if name else b""
        out.append(head + b"data: " + data + end + end)
    return b"".join(out)


@st.composite
def cut(draw: Any, body: bytes) -> list[bytes]:
    """`body` cut at arbitrary byte boundaries."""
    points = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=8))))
    pieces, last = [], 0
    for point in points:
        pieces.append(body[last:point])
        last = point
    pieces.append(body[last:])
    return [p for p in pieces if p]


@st.composite
def with_garbage(draw: Any, events: st.SearchStrategy[list[bytes]]) -> list[bytes]:
    """Events, now and then with one piece of garbage among them."""
    out = list(draw(events))
    if draw(st.integers(0, 4)) == 0:
        out.insert(draw(st.integers(0, len(out))), draw(GARBAGE))
    return out


GARBAGE = st.one_of(
    st.binary(max_size=20),
    st.just(b"[DONE]"),
    st.just(b"{"),
    st.just(b"[1, 2]"),
    st.just(b'"x"'),
    st.just(b"\xff\xfe"),
    st.just(b"[" * 2000 + b"]" * 2000),
)
