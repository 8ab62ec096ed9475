"""Valid inbound requests of both APIs, and Hypothesis strategies that break them one field at a time.

The bases cover every branch a translator reads (images by URL and data: URL,
PDFs, audio, tool calls and results, tools, tool_choice, response formats,
stop sequences, sampling fields), so a mutation of any path in them reaches
the translators' handling of that field.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

PNG = "data:image/png;base64,iVBORw0KGgo="
PDF = "data:application/pdf;base64,JVBERi0xLjQ="

OPENAI_CHAT = [
    {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "really"}]},
            {
                "role": "user",
                "name": "ann",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": PNG}},
                    {"type": "file", "file": {"file_data": PDF, "filename": "a.pdf"}},
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                ],
            },
            {
                "role": "assistant",
                "content": "calling",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get", "arguments": '{"q": 1}'},
                        "extra_content": {"google": {"thought_signature": "sig"}},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"ok": true}'},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
            {"role": "user", "content": "thanks"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get",
                    "description": "gets",
                    "strict": True,
                    "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}, "required": ["q"]},
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get"}},
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "out", "strict": True, "schema": {"type": "object", "properties": {}}},
        },
        "stop": ["END", "STOP"],
        "max_tokens": 50,
        "max_completion_tokens": 60,
        "temperature": 0.5,
        "top_p": 0.9,
        "n": 1,
        "seed": 7,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.1,
        "user": "u1",
        "stream": True,
        "stream_options": {"include_usage": True},
    },
    {
        "model": "m",
        "messages": [{"role": "user", "content": "json"}],
        "response_format": {"type": "json_object"},
        "tool_choice": "required",
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "stop": "X",
    },
]

ANTHROPIC_MESSAGES = [
    {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
    {
        "model": "m",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                    {
                        "type": "document",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
                        "title": "a.pdf",
                    },
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"q": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "is_error": False,
                        "content": [
                            {"type": "text", "text": '{"ok": true}'},
                            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
                        ],
                    },
                    {"type": "text", "text": "thanks"},
                ],
            },
        ],
        "tools": [{"name": "get", "description": "gets", "input_schema": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "tool", "name": "get", "disable_parallel_tool_use": True},
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u1"},
        "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 5,
        "stream": True,
    },
]

OPENAI_EMBEDDINGS = [
    {"model": "m", "input": "hello"},
    {"model": "m", "input": ["a", "b"], "dimensions": 8, "encoding_format": "base64", "user": "u"},
    {"model": "m", "input": [[1, 2], [3]]},
]

#: Fields either API knows, for mutations that add one the base lacks.
OPENAI_RESPONSES = [
    {"model": "m", "input": "hi"},
    {
        "model": "m",
        "instructions": "be brief",
        "input": [
            {"role": "developer", "content": "really"},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "low"},
                    {"type": "input_image", "image_url": PNG},
                    {"type": "input_file", "file_data": PDF, "filename": "a.pdf"},
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"role": "assistant", "content": [{"type": "output_text", "text": "calling", "annotations": []}]},
            {"type": "function_call", "call_id": "call_1", "name": "get", "arguments": '{"q": 1}'},
            {"type": "function_call_output", "call_id": "call_1", "output": '{"ok": true}'},
            {"type": "function_call", "call_id": "call_2", "name": "get", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "ok"}]},
            {"role": "user", "content": "thanks"},
        ],
        "tools": [
            {
                "type": "function",
                "name": "get",
                "description": "gets",
                "strict": True,
                "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}, "required": ["q"]},
            }
        ],
        "tool_choice": {"type": "function", "name": "get"},
        "parallel_tool_calls": False,
        "text": {"format": {"type": "json_schema", "name": "out", "strict": True, "schema": {"type": "object"}}},
        "reasoning": {"effort": "low"},
        "max_output_tokens": 60,
        "temperature": 0.5,
        "top_p": 0.9,
        "user": "u1",
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "truncation": "disabled",
        "metadata": {"k": "v"},
        "stream": True,
    },
]

KNOWN_FIELDS = sorted(
    {
        "model",
        "messages",
        "tools",
        "tool_choice",
        "response_format",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "n",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "user",
        "stream",
        "stream_options",
        "parallel_tool_calls",
        "logprobs",
        "top_logprobs",
        "modalities",
        "metadata",
        "logit_bias",
        "audio",
        "functions",
        "function_call",
        "safety_identifier",
        "input",
        "dimensions",
        "encoding_format",
        "system",
        "stop_sequences",
        "top_k",
        "thinking",
        "output_config",
        "service_tier",
        "store",
        "prediction",
        "web_search_options",
        "reasoning_effort",
        "instructions",
        "max_output_tokens",
        "text",
        "reasoning",
        "previous_response_id",
        "include",
        "truncation",
    }
)

_WORDS = [
    "",
    "text",
    "image_url",
    "image",
    "file",
    "input_audio",
    "refusal",
    "function",
    "tool",
    "tool_use",
    "tool_result",
    "user",
    "assistant",
    "system",
    "developer",
    "auto",
    "none",
    "any",
    "required",
    "json_schema",
    "json_object",
    "base64",
    "url",
    "document",
    "thinking",
    "call_1",
    "toolu_1",
    "get",
    PNG,
    PDF,
    "data:",
    "data:x",
    "https://x.test/a",
    "{}",
    "[1]",
    '{"a":',
    "null",
    "\ud7ff",
    "x" * 300,
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(_WORDS)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(_WORDS[:20]) | st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into a JSON value, containers included (the root as ())."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


def _set(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return body


def _delete(body: Any, path: tuple[Any, ...]) -> Any:
    if not path:
        return body
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    return body


@st.composite
def mutated(draw: st.DrawFn, bases: list[dict[str, Any]]) -> Any:
    """A base request with one to three fields replaced by any JSON, deleted, or added."""
    body: Any = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
        if action == "add" and isinstance(body, dict):
            body[draw(st.sampled_from(KNOWN_FIELDS))] = draw(json_values)
            continue
        path = draw(st.sampled_from(list(paths(body))))
        body = _delete(body, path) if action == "delete" else _set(body, path, draw(json_values))
    return body
