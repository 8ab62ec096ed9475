"""Apps using the official Anthropic SDK, pointed at the sidecar."""

from __future__ import annotations

import anthropic
import pytest

TOOL = {
    "name": "lookup",
    "description": "Look a thing up",
    "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
}


@pytest.mark.parametrize(
    "route,model", [("claude", "claude-sonnet-4-5"), ("gpt", "gpt-4o"), ("gemini", "gemini-2.5-flash")]
)
def test_messages_plain(claude, route, model):
    message = claude.messages.create(
        model=route, max_tokens=100, system="be brief", messages=[{"role": "user", "content": "hello there"}]
    )
    assert message.content[0].text == "echo: hello there"
    assert message.stop_reason == "end_turn"
    assert message.model == model
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4, 3)


@pytest.mark.parametrize("route", ["claude", "gpt", "gemini"])
def test_messages_stream(claude, route):
    with claude.messages.stream(
        model=route, max_tokens=100, messages=[{"role": "user", "content": "one two three"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "echo: one two three"
    assert len(pieces) >= 3
    assert final.usage.output_tokens == 4 and final.usage.input_tokens == 3
    assert final.stop_reason == "end_turn"


@pytest.mark.parametrize("route", ["claude", "gpt", "gemini"])
def test_tool_use_and_tool_result(claude, route):
    messages = [{"role": "user", "content": "use tool trains to Bern"}]
    with claude.messages.stream(model=route, max_tokens=100, tools=[TOOL], messages=messages) as stream:
        first = stream.get_final_message()
    use = next(b for b in first.content if b.type == "tool_use")
    assert (first.stop_reason, use.name, use.input) == ("tool_use", "lookup", {"query": "trains to Bern"})
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "at 9:00"}]},
    ]
    final = claude.messages.create(model=route, max_tokens=100, tools=[TOOL], messages=messages)
    assert final.content[0].text == "tool said: at 9:00"


def test_anthropic_errors_come_in_anthropic_shape(claude):
    with pytest.raises(anthropic.NotFoundError) as caught:
        claude.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["error"]["type"] == "not_found_error"
    assert "gpt" in caught.value.message  # names what is served
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model="claude", max_tokens=10, messages=[{"role": "robot", "content": "x"}])
    assert "role" in caught.value.message
