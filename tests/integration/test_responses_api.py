"""Apps on the official OpenAI SDK's Responses API (`client.responses`), pointed at the sidecar:
translated to every backend's wire format (Anthropic, Gemini), passed through to OpenAI and Azure
OpenAI (`test_responses_passthrough`): the same answers either way."""

from __future__ import annotations

import json

import openai
import pytest

ROUTES = ["gpt", "azure", "claude", "gemini"]
TOOL = {
    "type": "function",
    "name": "lookup",
    "description": "Look a thing up",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
}


@pytest.mark.parametrize("route", ROUTES)
def test_responses_plain(oai, route):
    response = oai.responses.create(model=route, instructions="be brief", input="hello there", max_output_tokens=100)
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == "echo: hello there"
    message = response.output[0]
    assert (message.type, message.role, message.content[0].type) == ("message", "assistant", "output_text")
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (4, 3, 7)
    assert response.instructions == "be brief" and response.max_output_tokens == 100


@pytest.mark.parametrize("route", ROUTES)
def test_responses_stream(oai, route):
    events = list(oai.responses.create(model=route, input="one two three", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert "".join(deltas) == "echo: one two three" and len(deltas) >= 3
    final = events[-1].response
    assert final.output_text == "echo: one two three"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 4)


@pytest.mark.parametrize("route", ROUTES)
def test_responses_stream_helper_assembles_the_response(oai, route):
    with oai.responses.stream(model=route, input="four five") as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text == "echo: four five"


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("stream", [False, True])
def test_function_call_round_trip(oai, route, stream):
    items: list = [{"role": "user", "content": "use tool trains to Bern"}]
    if stream:
        events = list(oai.responses.create(model=route, input=items, tools=[TOOL], stream=True))
        kinds = [event.type for event in events]
        assert "response.function_call_arguments.delta" in kinds
        done = next(e for e in events if e.type == "response.function_call_arguments.done")
        assert json.loads(done.arguments) == {"query": "trains to Bern"}
        first = events[-1].response
    else:
        first = oai.responses.create(model=route, input=items, tools=[TOOL])
    call = next(item for item in first.output if item.type == "function_call")
    assert (call.name, json.loads(call.arguments)) == ("lookup", {"query": "trains to Bern"})
    items += [item.model_dump(exclude_none=True) for item in first.output]
    items.append({"type": "function_call_output", "call_id": call.call_id, "output": "at 9:00"})
    final = oai.responses.create(model=route, input=items, tools=[TOOL])
    assert final.output_text == "tool said: at 9:00"


def test_output_bound_gives_an_incomplete_response(oai):
    response = oai.responses.create(model="claude", input="a b c d e f", max_output_tokens=2)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"


@pytest.mark.parametrize(
    "body,param",
    [
        ({"input": "hi"}, "model"),
        ({"model": "gpt", "input": 5}, "input"),
        ({"model": "gpt", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "gpt", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"model": "gpt", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"model": "gpt", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "gpt", "input": "x", "temperature": "hot"}, "temperature"),
        ({"model": "gpt", "input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
    ],
)
def test_malformed_requests_are_400s_naming_the_field(oai, body, param):
    with pytest.raises(openai.BadRequestError) as caught:
        oai.post("/responses", body=body, cast_to=object)
    assert caught.value.param == param
    assert param.split("[")[0] in caught.value.message


@pytest.mark.parametrize(
    "extra,param",
    [
        ({"previous_response_id": "resp_123"}, "previous_response_id"),
        ({"store": True}, "store"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ],
)
@pytest.mark.parametrize("route", ["claude", "gemini"])
def test_what_needs_provider_state_is_a_400_naming_the_field(oai, extra, param, route):
    with pytest.raises(openai.BadRequestError) as caught:
        oai.responses.create(model=route, **{"input": "hi", **extra})
    assert caught.value.param == param
    assert caught.value.code == "unsupported_parameter"


def test_unknown_model_is_a_404_in_openai_shape(oai):
    with pytest.raises(openai.NotFoundError) as caught:
        oai.responses.create(model="no-such-model", input="x")
    assert "gpt" in caught.value.message
