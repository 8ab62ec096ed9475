"""Restoring answers: exact values back wherever the deltas split, nothing else held, tool arguments still JSON."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.frontends.anthropic_stream import AnthropicStreamEncoder
from proxy.frontends.openai_chat import OpenAIStreamEncoder
from proxy.providers.openai import OpenAIStreamDecoder
from proxy.redaction import Pseudonymizer, RedactionRule, StreamRestorer, TextRestorer, restoring_encoder
from proxy.redaction.restore import json_escaped, restore_response

EMAIL, PHONE = "jane.doe@example.com", "+44 20 7946 0958"
# Values that need escaping in JSON: quotes, backslashes, a control character, non-ASCII, a '<' and '>'.
QUOTED = 'Jo "the <boss>" O\'Brien\\HQ\tZürich ☃'
ORIGINALS = {"<EMAIL_1>": EMAIL, "<PHONE_1>": PHONE, "<NAME_1>": QUOTED, "<EMAIL_12>": "x@y.zz"}

# Placeholders at the start, the end, back to back, an unknown one, '<' noise, a near miss.
ANSWER = "<EMAIL_1> wrote: call <PHONE_1><NAME_1>, not <EMAIL_2> or <EMAIL_12>; a<b, <<EMAIL_1>>, <EMAIL_1 , <NAME_1>"
EXPECTED = f"{EMAIL} wrote: call {PHONE}{QUOTED}, not <EMAIL_2> or x@y.zz; a<b, <{EMAIL}>, <EMAIL_1 , {QUOTED}"


def restorer(originals: dict[str, str] = ORIGINALS) -> StreamRestorer:
    return StreamRestorer(originals)


def content_chunk(text: str, *, index: int = 0, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": index, "delta": {"content": text}, "finish_reason": finish}],
    }


def args_chunk(text: str, *, call: int = 0, finish: str | None = None) -> dict[str, Any]:
    delta = {"tool_calls": [{"index": call, "function": {"arguments": text}}]}
    return {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def stream_content(pieces: list[str], originals: dict[str, str] = ORIGINALS) -> list[str]:
    """What the app's content deltas are for these upstream deltas (then the flush)."""
    restoring = restorer(originals)
    out = [restoring.chunk(content_chunk(piece))["choices"][0]["delta"]["content"] for piece in pieces]
    out += [chunk["choices"][0]["delta"]["content"] for chunk in restoring.flush()]
    return out


def splits(text: str, cuts: tuple[int, ...]) -> list[str]:
    bounds = (0, *cuts, len(text))
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


# --- text: every boundary ------------------------------------------------------------------------


def test_every_single_split_restores_exactly() -> None:
    for cut in range(len(ANSWER) + 1):
        assert "".join(stream_content(splits(ANSWER, (cut,)))) == EXPECTED, cut


def test_every_pair_of_splits_restores_exactly() -> None:
    # Two cuts anywhere: a placeholder in three pieces, or its end and the next one's start together.
    for cuts in itertools.combinations(range(len(ANSWER) + 1), 2):
        assert "".join(stream_content(splits(ANSWER, cuts))) == EXPECTED, cuts


def test_one_character_per_delta_restores_exactly() -> None:
    assert "".join(stream_content(list(ANSWER))) == EXPECTED


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(ANSWER)), max_size=12))
def test_any_splits_restore_exactly(cuts: list[int]) -> None:
    assert "".join(stream_content(splits(ANSWER, tuple(sorted(cuts))))) == EXPECTED


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from([*ORIGINALS, "<EMAIL_2>", "<", ">", "<EMAIL_", "_1>", "a", " ", "<<", "EMAIL_1>", "é"]),
        max_size=20,
    ),
    st.data(),
)
def test_any_text_any_splits_restores_as_a_whole_answer_would(parts: list[str], data: st.DataObject) -> None:
    text = "".join(parts)
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(text)), max_size=8))
    whole = restore_response({"choices": [{"message": {"content": text}}]}, ORIGINALS)
    assert "".join(stream_content(splits(text, tuple(sorted(cuts))))) == whole["choices"][0]["message"]["content"]


def test_only_a_possible_placeholder_start_is_held() -> None:
    # After each prefix of the answer, what was sent is all of it but the tail that may still
    # become one of the request's placeholders: from the last '<', and only if it is a prefix of one.
    prefixes = {p[:i] for p in ORIGINALS for i in range(1, len(p))}
    text_restorer = TextRestorer(swap=lambda m: m.group(), prefixes=frozenset(prefixes), longest=11)
    sent = ""
    for position, char in enumerate(ANSWER, start=1):
        sent += text_restorer.feed(char)
        seen = ANSWER[:position]
        tail = seen[seen.rfind("<") :] if "<" in seen else ""
        expected_held = tail if tail in prefixes else ""
        assert text_restorer.held == expected_held, seen
        assert sent + text_restorer.held == seen


def test_text_without_a_lt_passes_as_it_came() -> None:
    restoring = restorer()
    chunk = content_chunk("plain words, > and all")
    assert restoring.chunk(chunk) is chunk
    assert restoring.flush() == []


def test_a_placeholder_start_that_never_ends_is_released_at_the_end() -> None:
    assert stream_content(["hello <EMA", "IL_"]) == ["hello ", "", "<EMAIL_"]


def test_finish_reason_releases_what_is_held_in_that_chunk() -> None:
    restoring = restorer()
    restoring.chunk(content_chunk("see <EMAIL"))
    last = restoring.chunk(content_chunk("", finish="stop"))
    assert last["choices"][0] == {"index": 0, "delta": {"content": "<EMAIL"}, "finish_reason": "stop"}
    assert restoring.flush() == []


def test_choices_are_restored_independently() -> None:
    restoring = restorer()
    out: dict[int, str] = {0: "", 1: ""}
    for piece_0, piece_1 in [("<EMA", "<PHO"), ("IL_1", "NE_"), (">!", "1>?")]:
        chunk = content_chunk(piece_0)
        chunk["choices"].append({"index": 1, "delta": {"content": piece_1}, "finish_reason": None})
        for choice in restoring.chunk(chunk)["choices"]:
            out[choice["index"]] += choice["delta"]["content"]
    assert out == {0: f"{EMAIL}!", 1: f"{PHONE}?"}


# --- tool-call arguments: JSON stays JSON ----------------------------------------------------------

ARGUMENTS = json.dumps({"to": "<EMAIL_1>", "who": "<NAME_1>", "note": "dear <NAME_1>, call <PHONE_1>", "n": 1})
EXPECTED_ARGUMENTS = {"to": EMAIL, "who": QUOTED, "note": f"dear {QUOTED}, call {PHONE}", "n": 1}


def stream_arguments(pieces: list[str]) -> str:
    restoring = restorer()
    out = ""
    for piece in pieces:
        for call in restoring.chunk(args_chunk(piece))["choices"][0]["delta"]["tool_calls"]:
            out += call["function"]["arguments"]
    for chunk in restoring.flush():
        out += chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
    return out


def test_json_escaping_of_a_value() -> None:
    assert json.loads(f'"{json_escaped(QUOTED)}"') == QUOTED


def test_arguments_split_anywhere_parse_to_the_exact_values() -> None:
    for cuts in itertools.combinations(range(len(ARGUMENTS) + 1), 2):
        assert json.loads(stream_arguments(splits(ARGUMENTS, cuts))) == EXPECTED_ARGUMENTS, cuts


def test_arguments_of_a_whole_answer_parse_to_the_exact_values() -> None:
    message = {"role": "assistant", "content": "To <EMAIL_1>:", "tool_calls": [{"function": {"arguments": ARGUMENTS}}]}
    restored = restore_response({"choices": [{"index": 0, "message": message}]}, ORIGINALS)
    out = restored["choices"][0]["message"]
    assert out["content"] == f"To {EMAIL}:"
    assert json.loads(out["tool_calls"][0]["function"]["arguments"]) == EXPECTED_ARGUMENTS
    assert message["content"] == "To <EMAIL_1>:"  # the parsed answer is not changed in place


def test_tool_calls_by_index_and_a_held_tail_leaves_before_the_next_field() -> None:
    restoring = restorer()
    first = restoring.chunk(content_chunk("Writing to <EMA"))
    assert first["choices"][0]["delta"]["content"] == "Writing to "
    # The text is over when the first tool call starts: its tail goes out in that chunk, before the call.
    second = restoring.chunk(args_chunk('{"to": "<EMAIL_1', call=0))
    delta = second["choices"][0]["delta"]
    assert delta["content"] == "<EMA"
    assert delta["tool_calls"] == [{"index": 0, "function": {"arguments": '{"to": "'}}]
    # The second call starts while the first holds a tail: the first's tail goes first.
    third = restoring.chunk(args_chunk('{"to": "<PHONE_1>"}', call=1))
    calls = third["choices"][0]["delta"]["tool_calls"]
    assert calls == [
        {"index": 0, "function": {"arguments": "<EMAIL_1"}},
        {"index": 1, "function": {"arguments": json.dumps({"to": PHONE})[:-1] + "}"}},
    ]


# --- the answer as the app gets it -----------------------------------------------------------------


def openai_sse(deltas: list[str]) -> bytes:
    events = [
        {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"content": d}}]}
        for d in deltas
    ]
    events.append(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
    )
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def app_text_openai(body: bytes, cuts: tuple[int, ...]) -> str:
    """Upstream bytes cut at `cuts` -> the real decoder -> restore -> the OpenAI encoder -> the text the app reads."""
    decoder = OpenAIStreamDecoder()
    encoder = restoring_encoder(OpenAIStreamEncoder(include_usage=False), restorer())
    out = b""
    for a, b in itertools.pairwise((0, *cuts, len(body))):
        out += b"".join(encoder.encode(chunk) for chunk in decoder.feed(body[a:b]))
    out += b"".join(encoder.encode(chunk) for chunk in decoder.close()) + encoder.finish()
    text = ""
    for line in out.split(b"\n\n"):
        if line.startswith(b"data: {"):
            text += orjson.loads(line[6:])["choices"][0]["delta"].get("content") or ""
    return text


def test_upstream_bytes_cut_anywhere_the_app_reads_the_values() -> None:
    # The placeholder's pieces in different events, and the bytes cut at every boundary on top.
    body = openai_sse(["Mail <EM", "AIL_1> or Zü<", "NAME_1>."])
    expected = f"Mail {EMAIL} or Zü{QUOTED}."
    for cut in range(len(body) + 1):
        assert app_text_openai(body, (cut,)) == expected, cut


def test_an_openai_chunk_that_changes_is_re_encoded_not_sent_as_the_provider_bytes() -> None:
    decoder = OpenAIStreamDecoder()
    (chunk,) = decoder.feed(openai_sse(["to <EMAIL_1>"]).split(b"\n\n")[0] + b"\n\n")
    assert getattr(chunk, "raw", None) is not None
    restored = restorer().chunk(chunk)
    assert OpenAIStreamEncoder(include_usage=False).encode(restored).count(EMAIL.encode()) == 1
    unchanged = decoder.feed(openai_sse(["plain"]).split(b"\n\n")[0] + b"\n\n")[0]
    assert restorer().chunk(unchanged) is unchanged  # the provider's own bytes, as before


def test_anthropic_app_gets_text_and_tool_input_with_the_values() -> None:
    encoder = restoring_encoder(AnthropicStreamEncoder(), restorer())
    chunks = [content_chunk("Hi <NA"), content_chunk("ME_1>, sending to <EM")]
    chunks += [args_chunk('{"to": "<EMA'), args_chunk('IL_1>"}'), args_chunk("", finish="tool_calls")]
    out = b"".join(encoder.encode(chunk) for chunk in chunks) + encoder.finish()
    text, partial_json, blocks = "", "", []
    for event in out.split(b"\n\n"):
        for line in event.split(b"\n"):
            if line.startswith(b"data: "):
                data = orjson.loads(line[6:])
                if data["type"] == "content_block_start":
                    blocks.append(data["content_block"]["type"])
                elif data["type"] == "content_block_delta" and data["delta"]["type"] == "text_delta":
                    text += data["delta"]["text"]
                elif data["type"] == "content_block_delta":
                    partial_json += data["delta"]["partial_json"]
    assert text == f"Hi {QUOTED}, sending to <EM"  # a start never finished is the model's own text
    assert json.loads(partial_json) == {"to": EMAIL}
    assert blocks == ["text", "tool_use"]


# --- with the pseudonymizer: the round trip, and the mode that leaves placeholders -------------------


def test_round_trip_through_a_model_that_echoes_the_request() -> None:
    rule = RedactionRule(custom={"name": re.escape(QUOTED)})
    pseudonymizer = Pseudonymizer(rule)
    prompt = f"Write to {EMAIL} about {QUOTED}; call {PHONE}."
    sent = pseudonymizer.redact_chat({"messages": [{"role": "user", "content": prompt}]}).request
    echoed = sent["messages"][0]["content"]
    assert EMAIL not in echoed and PHONE not in echoed and QUOTED not in echoed
    stream = pseudonymizer.stream_restorer()
    assert stream is not None
    out = "".join(stream.chunk(content_chunk(c))["choices"][0]["delta"]["content"] for c in echoed)
    assert out + "".join(c["choices"][0]["delta"]["content"] for c in stream.flush()) == prompt
    whole = pseudonymizer.restore_response({"choices": [{"message": {"content": echoed}}]})
    assert whole["choices"][0]["message"]["content"] == prompt


def test_restore_false_leaves_the_placeholders() -> None:
    pseudonymizer = Pseudonymizer(RedactionRule(restore=False))
    sent = pseudonymizer.redact_chat({"messages": [{"role": "user", "content": f"to {EMAIL}"}]}).request
    assert sent["messages"][0]["content"] == "to <EMAIL_1>"
    assert pseudonymizer.stream_restorer() is None
    answer = {"choices": [{"message": {"content": "Sent to <EMAIL_1>."}}]}
    assert pseudonymizer.restore_response(answer) is answer


def test_a_whole_answer_without_placeholders_is_returned_as_it_is() -> None:
    answer = {"choices": [{"message": {"content": "a < b > c", "tool_calls": [{"function": {"arguments": "{}"}}]}}]}
    assert restore_response(answer, ORIGINALS) is answer
