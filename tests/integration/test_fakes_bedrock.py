"""The fake Bedrock is faithful: the AWS SDK's own client (botocore's bedrock-runtime, which signs
with SigV4 and parses the binary event stream and AWS's error shapes) talks to it as to AWS."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fakes.process import FakeProviderProcess

botocore_session = pytest.importorskip("botocore.session")
from botocore.config import Config  # noqa: E402  (after the importorskip)
from botocore.exceptions import ClientError, EventStreamError  # noqa: E402

pytestmark = pytest.mark.timeout(30)
MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
TOOLS: Any = {
    "tools": [
        {
            "toolSpec": {
                "name": "lookup",
                "inputSchema": {"json": {"type": "object", "properties": {"query": {"type": "string"}}}},
            }
        }
    ]
}


def client(fake: FakeProviderProcess, *, secret: str | None = None) -> Any:
    key_id, _, real_secret = fake.api_key.partition(":")
    return botocore_session.get_session().create_client(
        "bedrock-runtime",
        region_name="eu-central-1",
        endpoint_url=fake.base_url,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret or real_secret,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


def test_converse(fake_bedrock: FakeProviderProcess) -> None:
    answer = client(fake_bedrock).converse(
        modelId=MODEL,
        system=[{"text": "be brief"}],
        messages=[{"role": "user", "content": [{"text": "hello there"}]}],
        inferenceConfig={"maxTokens": 100},
    )
    assert answer["output"]["message"]["content"] == [{"text": "echo: hello there"}]
    assert answer["stopReason"] == "end_turn"
    assert answer["usage"] == {"inputTokens": 4, "outputTokens": 3, "totalTokens": 7}
    [seen] = fake_bedrock.requests()
    assert seen["path"] == f"/model/{MODEL}/converse"
    assert seen["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIAFAKEBEDROCK12345/")


def test_converse_stream_in_the_binary_framing(fake_bedrock: FakeProviderProcess) -> None:
    answer = client(fake_bedrock).converse_stream(
        modelId=MODEL, messages=[{"role": "user", "content": [{"text": "one two three"}]}]
    )
    events = list(answer["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "echo: one two three"
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 4


def test_tool_use_streamed_and_answered(fake_bedrock: FakeProviderProcess) -> None:
    aws = client(fake_bedrock)
    messages: list[Any] = [{"role": "user", "content": [{"text": "use tool trains to Bern"}]}]
    events = list(aws.converse_stream(modelId=MODEL, messages=messages, toolConfig=TOOLS)["stream"])
    start = next(e["contentBlockStart"]["start"]["toolUse"] for e in events if "contentBlockStart" in e)
    arguments = "".join(
        e["contentBlockDelta"]["delta"]["toolUse"]["input"]
        for e in events
        if "toolUse" in e.get("contentBlockDelta", {}).get("delta", {})
    )
    assert start["name"] == "lookup" and arguments == '{"query": "trains to Bern"}'
    assert next(e["messageStop"]["stopReason"] for e in events if "messageStop" in e) == "tool_use"
    messages += [
        {"role": "assistant", "content": [{"toolUse": {**start, "input": {"query": "trains to Bern"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": start["toolUseId"], "content": [{"text": "9:00"}]}}]},
    ]
    final = aws.converse(modelId=MODEL, messages=messages, toolConfig=TOOLS)
    assert final["output"]["message"]["content"] == [{"text": "tool said: 9:00"}]


@pytest.mark.parametrize(("status", "code"), [(429, "ThrottlingException"), (400, "ValidationException")])
def test_scripted_errors_are_aws_exceptions(fake_bedrock: FakeProviderProcess, status: int, code: str) -> None:
    fake_bedrock.script([{"status": status}])
    with pytest.raises(ClientError) as caught:
        client(fake_bedrock).converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "x"}]}])
    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


def test_a_wrong_secret_is_refused_as_aws_refuses_it(fake_bedrock: FakeProviderProcess) -> None:
    with pytest.raises(ClientError) as caught:
        client(fake_bedrock, secret="not/the/secret").converse(
            modelId=MODEL, messages=[{"role": "user", "content": [{"text": "x"}]}]
        )
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_an_exception_mid_stream(fake_bedrock: FakeProviderProcess) -> None:
    fake_bedrock.script([{"error_after_chunks": 2}])
    answer = client(fake_bedrock).converse_stream(
        modelId=MODEL, messages=[{"role": "user", "content": [{"text": "one two three"}]}]
    )
    with pytest.raises(EventStreamError) as caught:
        list(answer["stream"])
    assert caught.value.response["Error"]["Code"] == "modelStreamErrorException"


def test_the_fake_refuses_turns_that_do_not_alternate(fake_bedrock: FakeProviderProcess) -> None:
    with pytest.raises(ClientError) as caught:
        client(fake_bedrock).converse(
            modelId=MODEL,
            messages=[{"role": "user", "content": [{"text": "a"}]}, {"role": "user", "content": [{"text": "b"}]}],
        )
    assert "alternate" in caught.value.response["Error"]["Message"]


def test_invoke_model_with_anthropics_body(fake_bedrock: FakeProviderProcess) -> None:
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hello there"}],
    }
    aws = client(fake_bedrock)
    answer = json.loads(aws.invoke_model(modelId=MODEL, body=json.dumps(body))["body"].read())
    assert answer["type"] == "message" and answer["content"] == [{"type": "text", "text": "echo: hello there"}]
    streamed = aws.invoke_model_with_response_stream(modelId=MODEL, body=json.dumps(body))
    events = [json.loads(e["chunk"]["bytes"]) for e in streamed["body"]]
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert text == "echo: hello there"
    with pytest.raises(ClientError) as caught:
        aws.invoke_model(modelId=MODEL, body=json.dumps({**body, "model": "claude"}))
    assert "extraneous key [model]" in caught.value.response["Error"]["Message"]


def test_count_tokens_for_converse_and_invoke_model_bodies(fake_bedrock: FakeProviderProcess) -> None:
    aws = client(fake_bedrock)
    converse = {"system": [{"text": "be brief"}], "messages": [{"role": "user", "content": [{"text": "hello there"}]}]}
    counted = aws.count_tokens(modelId=MODEL, input={"converse": converse})
    assert counted["inputTokens"] == aws.converse(modelId=MODEL, **converse)["usage"]["inputTokens"] == 4
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 100,
        "system": "be brief",
        "messages": [{"role": "user", "content": "hello there"}],
    }
    counted = aws.count_tokens(modelId=MODEL, input={"invokeModel": {"body": json.dumps(body).encode()}})
    answer = json.loads(aws.invoke_model(modelId=MODEL, body=json.dumps(body))["body"].read())
    assert counted["inputTokens"] == answer["usage"]["input_tokens"] == 4
    sent = fake_bedrock.requests()[0]
    assert sent["path"] == f"/model/{MODEL}/count-tokens" and set(sent["json"]["input"]) == {"converse"}
    with pytest.raises(ClientError) as caught:  # as on AWS: Anthropic models only
        aws.count_tokens(modelId="amazon.nova-lite-v1:0", input={"converse": converse})
    assert caught.value.response["Error"]["Code"] == "ValidationException"


def test_cache_points_as_botocore_sends_them(fake_bedrock: FakeProviderProcess) -> None:
    """botocore checks cachePoint blocks against AWS's own model before sending: system, content, tools."""
    point: Any = {"cachePoint": {"type": "default"}}
    bedrock = client(fake_bedrock)
    request: Any = {
        "modelId": MODEL,
        "system": [{"text": "long rules"}, {"cachePoint": {"type": "default", "ttl": "1h"}}],
        "messages": [{"role": "user", "content": [{"text": "a document"}, point, {"text": "hello there"}]}],
        "toolConfig": {"tools": [*TOOLS["tools"], point]},
    }
    usage = bedrock.converse(**request)["usage"]
    assert (usage["cacheReadInputTokens"], usage["cacheWriteInputTokens"]) == (1024, 0)
    assert usage["totalTokens"] == usage["inputTokens"] + 1024 + usage["outputTokens"]  # inputTokens: the rest
    fake_bedrock.script([{"cache_write": True}])
    events = list(bedrock.converse_stream(**request)["stream"])
    usage = next(event["metadata"]["usage"] for event in events if "metadata" in event)
    assert (usage["cacheReadInputTokens"], usage["cacheWriteInputTokens"]) == (0, 1024)
    five = {**request, "messages": [{"role": "user", "content": [{"text": "a"}, point] * 3}]}
    with pytest.raises(ClientError) as refused:
        bedrock.converse(**five)
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "cache checkpoints" in refused.value.response["Error"]["Message"]
