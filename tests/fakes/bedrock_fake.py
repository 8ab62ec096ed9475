"""Fake Amazon Bedrock Runtime speaking Converse and ConverseStream as documented.

POST /model/{modelId}/converse          -> a Converse JSON answer
POST /model/{modelId}/converse-stream   -> application/vnd.amazon.eventstream: binary messages with
                                           real CRCs (messageStart, contentBlockStart/Delta/Stop,
                                           messageStop, metadata; payloads padded with "p" as AWS does)
POST /model/{modelId}/invoke            -> InvokeModel with Anthropic's Messages body (anthropic_version
                                           bedrock-2023-05-31, no model, no stream): an Anthropic message
POST /model/{modelId}/invoke-with-response-stream -> `chunk` messages, each {"bytes": base64 of one
                                           Anthropic stream event}
POST /model/{modelId}/count-tokens      -> CountTokens: `{"input": {"converse": {messages, system,
                                           toolConfig, additionalModelRequestFields}}}` or
                                           `{"input": {"invokeModel": {"body": <base64 InvokeModel body>}}}`
                                           -> `{"inputTokens": N}` (what the call would report); Anthropic
                                           models only, as on AWS (others: ValidationException)
Auth: SigV4 (service `bedrock`), checked with botocore's own signer against the fake's secret, so
a wrong key, a stale date or a bad signature is the 403 AWS would send; or a bearer token (a Bedrock
API key) equal to the fake's whole key string. The fake's key is "<access key id>:<secret key>". Session
credentials issued by the fake STS (`sts_fake`) are refused once expired (ExpiredTokenException).
Prompt caching: `cachePoint` blocks (`{"type": "default"}`, optionally a `ttl` of 5m or 1h) are taken
in `system`, in a message's `content` and in `toolConfig.tools`, at most four; a request holding
one reports `cacheReadInputTokens` (1024, as a cache hit), or with a scripted `cache_write`
`cacheWriteInputTokens`, beside `inputTokens` (the rest of the prompt), plain and streamed.
Errors are AWS's REST-JSON shape: `{"message": ...}` with the exception's name in `x-amzn-ErrorType`;
in a stream (`error_after_chunks`), an exception message (`modelStreamErrorException`, or the one a
scripted `message` ending in "Exception" names, e.g. `throttlingException`).
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from proxy.providers.aws_eventstream import encode_message

from . import anthropic_fake
from .answers import Conversation, Reply, ToolMode, json_pieces, random_token, reply_to, word_pieces
from .behaviour import STATE, FakeState, add_control_routes, before_reply, record, send_json, stream_events
from .sts_fake import session_token_expiry

STOP_REASON = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "stop_sequence": "stop_sequence"}
EXCEPTIONS = {
    400: ("ValidationException", "Malformed input request, please reformat your input and try again."),
    403: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
    404: ("ResourceNotFoundException", "Could not resolve the foundation model from the provided model identifier."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request. Try your request again."),
    424: ("ModelErrorException", "The system encountered an unexpected error during processing. Try again."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an internal error while processing the request."),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}
REQUEST_FIELDS = frozenset(
    {
        "messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig", "additionalModelRequestFields",
        "promptVariables", "additionalModelResponseFieldPaths", "requestMetadata", "performanceConfig",
    }
)  # fmt: skip
INFERENCE_FIELDS = frozenset({"maxTokens", "temperature", "topP", "stopSequences"})
BLOCK_KINDS = frozenset(
    {"text", "image", "document", "video", "toolUse", "toolResult", "guardContent", "cachePoint", "reasoningContent"}
)
START_WITH_USER = (
    "A conversation must start with a user message. Try again with a conversation that starts with a user message."
)
ALTERNATE = (
    "A conversation must alternate between user and assistant roles. Make sure the conversation alternates "
    "between user and assistant roles and try again."
)
MAX_CLOCK_SKEW = 300  # seconds AWS accepts between x-amz-date and its own clock


class BedrockError(Exception):
    def __init__(self, status: int, message: str | None = None, exception: str | None = None) -> None:
        name, default = EXCEPTIONS.get(status, ("UnknownException", "Unknown error."))
        super().__init__(message or default)
        self.status, self.message, self.exception = status, message or default, exception or name


def bedrock_error(status: int, message: str | None, exception: str | None = None) -> web.Response:
    error = BedrockError(status, message, exception)
    return web.json_response(
        {"message": error.message},
        status=status,
        headers={
            "x-amzn-ErrorType": f"{error.exception}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-RequestId": str(uuid.uuid4()),
        },
    )


def create_app(api_key: str) -> web.Application:
    app = web.Application()
    app[STATE] = FakeState(api_key=api_key)
    add_control_routes(app)
    app.router.add_post("/model/{model_id:.+}/converse-stream", _converse)
    app.router.add_post("/model/{model_id:.+}/converse", _converse)
    app.router.add_post("/model/{model_id:.+}/invoke-with-response-stream", _invoke)
    app.router.add_post("/model/{model_id:.+}/invoke", _invoke)
    app.router.add_post("/model/{model_id:.+}/count-tokens", _count_tokens)
    return app


# --- auth ------------------------------------------------------------------------------------


def _authorization_fields(value: str) -> dict[str, str]:
    _, _, rest = value.partition(" ")
    return dict(part.strip().split("=", 1) for part in rest.split(",") if "=" in part)


async def check_auth(request: web.Request, api_key: str) -> None:
    """Raises BedrockError(403) as AWS answers an unsigned, mis-signed or stale request."""
    authorization = request.headers.get("authorization", "")
    if authorization.startswith("Bearer "):
        if authorization[len("Bearer ") :] != api_key:
            raise BedrockError(
                403, "Invalid API Key format: Must start with pre-defined prefix", "AccessDeniedException"
            )
        return
    if not authorization.startswith("AWS4-HMAC-SHA256 "):
        raise BedrockError(403, "Missing Authentication Token", "MissingAuthenticationTokenException")
    key_id, _, secret = api_key.partition(":")
    fields = _authorization_fields(authorization)
    scope = fields.get("Credential", "").split("/")
    if len(scope) != 5 or scope[0] != key_id:
        raise BedrockError(403, "The security token included in the request is invalid.", "UnrecognizedClientException")
    stamp = request.headers.get("x-amz-date", "")
    try:
        signed_at = calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        raise BedrockError(
            403,
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            "IncompleteSignatureException",
        ) from None
    if abs(time.time() - signed_at) > MAX_CLOCK_SKEW:
        raise BedrockError(
            403, f"Signature expired: {stamp} is now earlier than the allowed skew.", "InvalidSignatureException"
        )
    expiry = session_token_expiry(request.headers.get("x-amz-security-token", ""))
    if expiry is not None and time.time() > expiry:
        raise BedrockError(403, "The security token included in the request is expired", "ExpiredTokenException")
    body = await request.read()
    declared = request.headers.get("x-amz-content-sha256")
    if declared is not None and declared != hashlib.sha256(body).hexdigest():
        raise BedrockError(400, "The provided 'x-amz-content-sha256' header does not match what was computed.")
    signed_names = fields.get("SignedHeaders", "").split(";")
    headers = {name: request.headers.get(name, "") for name in signed_names}
    url = f"http://{request.headers.get('host', '')}{request.raw_path}"
    aws_request = AWSRequest(method=request.method, url=url, headers=headers, data=body)
    aws_request.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(key_id, secret, request.headers.get("x-amz-security-token")), scope[3], scope[2])
    expected = signer.signature(signer.string_to_sign(aws_request, signer.canonical_request(aws_request)), aws_request)
    if scope[3] != "bedrock" or fields.get("Signature") != expected:
        raise BedrockError(
            403,
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
            "Access Key and signing method. Consult the service documentation for details.",
            "InvalidSignatureException",
        )


# --- the request -----------------------------------------------------------------------------


async def _converse(request: web.Request) -> web.StreamResponse:
    body = await record(request)
    state = request.app[STATE]
    behaviour = state.next_behaviour()
    stream = request.path.endswith("/converse-stream")
    if (early := await before_reply(behaviour, bedrock_error, stream=stream)) is not None:
        return early
    try:
        await check_auth(request, state.api_key)
        if not isinstance(body, dict):
            raise BedrockError(400, "Malformed input request, please reformat your input and try again.")
        conv = conversation(body)
    except BedrockError as exc:
        return bedrock_error(exc.status, exc.message, exc.exception)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        return bedrock_error(400, f"Malformed input request (fake could not read it: {exc!r})")
    reply = reply_to(conv)
    cache = cache_usage(body, write=behaviour.cache_write)
    if not stream:
        return await send_json(request, converse_answer(reply, cache), behaviour)
    # error_after_chunks sends modelStreamErrorException, or the exception a scripted message names
    named = behaviour.message if behaviour.message and behaviour.message.endswith("Exception") else None
    error = exception_message(named or "modelStreamErrorException", "The model stream encountered an error.")
    events = list(stream_messages(reply, cache))
    return await stream_events(
        request, events, behaviour, error_event=error, headers={"Content-Type": "application/vnd.amazon.eventstream"}
    )


async def _invoke(request: web.Request) -> web.StreamResponse:
    """Anthropic models through InvokeModel: the Anthropic fake's reading of the body and its answers."""
    body = await record(request)
    state = request.app[STATE]
    behaviour = state.next_behaviour()
    stream = request.path.endswith("/invoke-with-response-stream")
    if (early := await before_reply(behaviour, bedrock_error, stream=stream)) is not None:
        return early
    model = request.match_info["model_id"]
    try:
        await check_auth(request, state.api_key)
        if not isinstance(body, dict):
            raise BedrockError(400, "Malformed input request, please reformat your input and try again.")
        for key in ("model", "stream"):
            if key in body:
                raise BedrockError(400, f"Malformed input request: extraneous key [{key}] is not permitted")
        if body.get("anthropic_version") != "bedrock-2023-05-31":
            raise BedrockError(400, "Malformed input request: anthropic_version: bedrock-2023-05-31 is required")
        reply = reply_to(anthropic_fake.conversation({**body, "model": model}))
        extras = anthropic_fake.extras_for(body)
    except BedrockError as exc:
        return bedrock_error(exc.status, exc.message, exc.exception)
    except anthropic_fake.ApiError as exc:
        return bedrock_error(400, exc.message)
    ident = "msg_bdrk_01" + random_token(20)
    name = model.split(".", 1)[-1].split(":")[0].removesuffix("-v1").removesuffix("-v2")
    if not stream:
        return await send_json(request, anthropic_fake.message(ident, name, reply, extras), behaviour)
    events = [chunk_message(data) for data in anthropic_fake.stream_data(ident, name, reply, extras)]
    error = exception_message("modelStreamErrorException", "The model stream encountered an error.")
    return await stream_events(
        request, events, behaviour, error_event=error, headers={"Content-Type": "application/vnd.amazon.eventstream"}
    )


CONVERSE_COUNTED = frozenset({"messages", "system", "toolConfig", "additionalModelRequestFields"})


async def _count_tokens(request: web.Request) -> web.Response:
    body = await record(request)
    state = request.app[STATE]
    if (early := await before_reply(state.next_behaviour(), bedrock_error, stream=False)) is not None:
        return early
    model = request.match_info["model_id"]
    try:
        await check_auth(request, state.api_key)
        if not model.startswith("anthropic."):
            raise BedrockError(400, "The provided model doesn't support counting tokens.")
        given = body.get("input") if isinstance(body, dict) and set(body) == {"input"} else None
        if not isinstance(given, dict) or len(given) != 1 or not set(given) <= {"converse", "invokeModel"}:
            raise BedrockError(400, "Malformed input request: input must hold exactly one of converse, invokeModel")
        if "converse" in given:
            converse = given["converse"]
            if not isinstance(converse, dict) or set(converse) - CONVERSE_COUNTED:
                raise BedrockError(400, "Malformed input request: input.converse has an unknown key")
            counted = reply_to(conversation(converse)).input_tokens
        else:
            invoke = json.loads(base64.b64decode(given["invokeModel"]["body"], validate=True))
            if invoke.get("anthropic_version") != "bedrock-2023-05-31" or "model" in invoke:
                raise BedrockError(400, "Malformed input request: not an InvokeModel body for an Anthropic model")
            counted = reply_to(anthropic_fake.conversation({**invoke, "model": model})).input_tokens
    except BedrockError as exc:
        return bedrock_error(exc.status, exc.message, exc.exception)
    except anthropic_fake.ApiError as exc:
        return bedrock_error(400, exc.message)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        return bedrock_error(400, f"Malformed input request (fake could not read it: {exc!r})")
    return web.json_response({"inputTokens": counted})


def chunk_message(event: dict[str, Any]) -> bytes:
    if event.get("type") == "message_stop":  # Bedrock adds its own figures to the last event
        event = {**event, "amazon-bedrock-invocationMetrics": {"inputTokenCount": 4, "outputTokenCount": 3}}
    raw = base64.b64encode(json.dumps(event).encode()).decode()
    headers = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, json.dumps({"bytes": raw, "p": "abcdef"}).encode())


def _check_message(i: int, message: Any) -> None:
    if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
        raise BedrockError(400, f"messages.{i}.role: must be user or assistant")
    content = message.get("content")
    if not isinstance(content, list) or not content:
        raise BedrockError(400, f"messages.{i}.content: The content field in the Message object is empty.")
    for j, block in enumerate(content):
        if not isinstance(block, dict) or len(block) != 1 or next(iter(block)) not in BLOCK_KINDS:
            raise BedrockError(400, f"messages.{i}.content.{j}: a content block has exactly one member")
        if "toolUse" in block and not isinstance(block["toolUse"].get("input"), dict):
            raise BedrockError(400, f"messages.{i}.content.{j}.toolUse.input must be an object")


CACHED_TOKENS = 1024  # (Claude on Bedrock caches prompts of at least 1024 tokens)
CACHE_TTLS = frozenset({"5m", "1h"})
MAX_CACHE_POINTS = 4


def _cache_points(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """(where, cachePoint value) of every cache checkpoint: system, message contents, tools."""
    found = [(f"system.{i}", b["cachePoint"]) for i, b in enumerate(body.get("system") or []) if "cachePoint" in b]
    for i, message in enumerate(body.get("messages") or []):
        found += [
            (f"messages.{i}.content.{j}", b["cachePoint"])
            for j, b in enumerate(message["content"])
            if "cachePoint" in b
        ]
    tools = (body.get("toolConfig") or {}).get("tools") or []
    found += [(f"toolConfig.tools.{i}", t["cachePoint"]) for i, t in enumerate(tools) if "cachePoint" in t]
    return found


def _check_cache_points(body: dict[str, Any]) -> None:
    points = _cache_points(body)
    for where, point in points:
        if not isinstance(point, dict) or point.get("type") != "default" or set(point) - {"type", "ttl"}:
            raise BedrockError(400, f"{where}.cachePoint: type must be 'default' (and only ttl may be set)")
        if "ttl" in point and point["ttl"] not in CACHE_TTLS:
            raise BedrockError(400, f"{where}.cachePoint.ttl: must be one of 5m, 1h")
    if len(points) > MAX_CACHE_POINTS:
        raise BedrockError(400, f"A maximum of {MAX_CACHE_POINTS} cache checkpoints is allowed; found {len(points)}.")


def cache_usage(body: dict[str, Any], *, write: bool) -> tuple[int, int]:
    """(tokens read from, tokens written to) the prompt cache: a request with checkpoints hits the
    cache, or with a scripted `cache_write` fills it."""
    cached = CACHED_TOKENS if _cache_points(body) else 0
    return (0, cached) if write else (cached, 0)


def conversation(body: dict[str, Any]) -> Conversation:
    extra = sorted(set(body) - REQUEST_FIELDS)
    if extra:
        raise BedrockError(400, f"Malformed input request: extraneous key [{extra[0]}] is not permitted")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BedrockError(400, "A conversation must start with a user message.")
    for i, message in enumerate(messages):
        _check_message(i, message)
        if message["role"] == ("user" if i % 2 == 0 else "assistant"):
            continue
        if i == 0:
            raise BedrockError(400, START_WITH_USER)
        raise BedrockError(400, ALTERNATE)
    _check_cache_points(body)
    tool_config = body.get("toolConfig")
    blocks = [b for m in messages for b in m["content"]]
    if tool_config is None and any("toolUse" in b or "toolResult" in b for b in blocks):
        raise BedrockError(
            400, "The toolConfig field must be defined when using toolUse and toolResult content blocks."
        )
    inference = body.get("inferenceConfig") or {}
    if set(inference) - INFERENCE_FIELDS:
        unknown = sorted(set(inference) - INFERENCE_FIELDS)[0]
        raise BedrockError(400, f"Malformed input request: extraneous key [{unknown}] is not permitted")
    texts = [s["text"] for s in body.get("system") or [] if "text" in s]
    texts += [b["text"] for b in blocks if "text" in b]
    texts += [_result_text(b["toolResult"]) for b in blocks if "toolResult" in b]
    last = [m for m in messages if m["role"] == "user"][-1]["content"]
    results = [_result_text(b["toolResult"]) for b in last if "toolResult" in b]
    tools = [t["toolSpec"]["name"] for t in (tool_config or {}).get("tools", []) if "toolSpec" in t]
    mode, forced = _tool_choice((tool_config or {}).get("toolChoice") or {"auto": {}})
    return Conversation(
        texts=texts,
        last_user_text="".join(b["text"] for b in last if "text" in b),
        tool_results=results or None,
        tools=tools,
        tool_mode=mode,
        forced_tool=forced,
        max_tokens=inference.get("maxTokens"),
        stop=list(inference.get("stopSequences") or []),
    )


def _result_text(result: dict[str, Any]) -> str:
    return "".join(c["text"] if "text" in c else json.dumps(c.get("json")) for c in result.get("content", []))


def _tool_choice(choice: dict[str, Any]) -> tuple[ToolMode, str | None]:
    if "any" in choice:
        return "required", None
    if "tool" in choice:
        return "required", choice["tool"]["name"]
    return "auto", None


# --- answers ---------------------------------------------------------------------------------


def _usage(reply: Reply, cache: tuple[int, int] = (0, 0)) -> dict[str, int]:
    # inputTokens counts what was neither read from nor written to the cache.
    read, written = cache
    usage = {
        "inputTokens": reply.input_tokens,
        "outputTokens": reply.output_tokens,
        "totalTokens": reply.input_tokens + read + written + reply.output_tokens,
    }
    if read or written:
        usage["cacheReadInputTokens"], usage["cacheWriteInputTokens"] = read, written
    return usage


def converse_answer(reply: Reply, cache: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.text is not None:
        content.append({"text": reply.text})
    if reply.tool_call is not None:
        tool_use = {"toolUseId": "tooluse_" + random_token(22), "name": reply.tool_call.name}
        content.append({"toolUse": {**tool_use, "input": reply.tool_call.arguments}})
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": STOP_REASON[reply.finish],
        "usage": _usage(reply, cache),
        "metrics": {"latencyMs": 42},
    }


def event_message(event: str, payload: dict[str, Any]) -> bytes:
    # AWS pads each payload with a "p" field of varying length (against size side channels).
    padded = {**payload, "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"[: 1 + len(event) % 20]}
    headers = {":event-type": event, ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, json.dumps(padded, separators=(",", ":")).encode())


def exception_message(exception: str, message: str) -> bytes:
    headers = {":exception-type": exception, ":content-type": "application/json", ":message-type": "exception"}
    return encode_message(headers, json.dumps({"message": message}).encode())


def stream_messages(reply: Reply, cache: tuple[int, int] = (0, 0)) -> Iterator[bytes]:
    yield event_message("messageStart", {"role": "assistant"})
    index = 0
    if reply.text is not None:
        for piece in word_pieces(reply.text):
            yield event_message("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": piece}})
        yield event_message("contentBlockStop", {"contentBlockIndex": index})
        index += 1
    if reply.tool_call is not None:
        start = {"toolUse": {"toolUseId": "tooluse_" + random_token(22), "name": reply.tool_call.name}}
        yield event_message("contentBlockStart", {"contentBlockIndex": index, "start": start})
        for piece in json_pieces(reply.tool_call.arguments_json):
            yield event_message(
                "contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}}
            )
        yield event_message("contentBlockStop", {"contentBlockIndex": index})
    yield event_message("messageStop", {"stopReason": STOP_REASON[reply.finish]})
    yield event_message("metadata", {"usage": _usage(reply, cache), "metrics": {"latencyMs": 42}})
