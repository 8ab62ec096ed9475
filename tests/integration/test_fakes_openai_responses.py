"""The fake OpenAI's Responses API is faithful: the official `openai` SDK (`client.responses`, and
`AzureOpenAI` on Azure's v1 API) reads its answers and its event stream as OpenAI's own."""

from __future__ import annotations

import openai
import pytest

from tests.fakes.process import FakeProviderProcess
from tests.integration.fakes_common import *  # noqa: F403  (the direct_oai fixture)

TOOL = {
    "type": "function",
    "name": "lookup",
    "description": "Look a thing up",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
}


def test_a_response_plain_and_continued(direct_oai: openai.OpenAI) -> None:
    first = direct_oai.responses.create(model="gpt-4o", instructions="be brief", input="hello there")
    assert first.status == "completed" and first.output_text == "echo: hello there"
    assert first.usage is not None and first.usage.input_tokens == 4
    assert first.usage.input_tokens_details.cached_tokens == 0
    later = direct_oai.responses.create(model="gpt-4o", input="and again", previous_response_id=first.id)
    assert later.output_text == "echo: and again" and later.previous_response_id == first.id
    assert later.usage is not None and later.usage.input_tokens_details.cached_tokens == 4  # the stored prefix
    with pytest.raises(openai.BadRequestError) as unknown:
        direct_oai.responses.create(model="gpt-4o", input="hi", previous_response_id="resp_nope")
    assert "Previous response with id 'resp_nope' not found." in str(unknown.value)


def test_a_streamed_response_and_a_function_call(direct_oai: openai.OpenAI) -> None:
    events = list(direct_oai.responses.create(model="gpt-4o", input="one two three", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "echo: one two three" == events[-1].response.output_text  # type: ignore[union-attr]
    with direct_oai.responses.stream(model="gpt-4o", input="use tool trains", tools=[TOOL]) as stream:  # type: ignore[list-item]
        final = stream.get_final_response()
    [call] = final.output
    assert call.type == "function_call" and call.name == "lookup" and call.arguments == '{"query": "trains"}'


def test_azure_v1_responses_with_the_azure_client(fake_openai: FakeProviderProcess) -> None:
    azure = openai.OpenAI(
        base_url=fake_openai.base_url + "/openai/v1/",
        api_key="unused",
        default_headers={"api-key": fake_openai.api_key},
        max_retries=0,
    )
    answer = azure.responses.create(model="my-deployment", input="hello", tools=[{"type": "web_search"}])
    assert answer.output_text == "echo: hello" and answer.model == "my-deployment"
    assert answer.tools[0].type == "web_search"
