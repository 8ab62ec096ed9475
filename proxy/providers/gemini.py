"""Google Gemini API (`generativelanguage`, v1beta): generateContent, its SSE stream, and embeddings.

Request bodies (the internal OpenAI Chat Completions form -> `GenerateContentRequest`,
and embed requests) are built in `proxy.providers.gemini_request`; this module
holds `GeminiTranslator` and turns Gemini's answers back into the internal
form. The differences that shape it:

- Gemini 3 models want the `thoughtSignature` of a function call back in the
  next turn. Responses carry it where Google's own OpenAI-compatible endpoint
  does (`tool_calls[].extra_content.google.thought_signature`, which the
  OpenAI SDKs send back untouched), so the next request can return it.
- Streams are whole `GenerateContentResponse` objects per SSE event, with no
  end marker: a finish reason is what proves the stream complete.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any
from urllib.parse import quote

import orjson

from proxy.providers import checks
from proxy.providers.base import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    StreamState,
    UpstreamProtocolError,
    UpstreamRequest,
    Usage,
    json_body,
)
from proxy.providers.gemini_request import gemini_chat_body, gemini_embeddings_body
from proxy.providers.openai import JSON_HEADERS, SSE_HEADERS, body_excerpt, load_json_object, server_of
from proxy.snapshot import Provider
from proxy.sse import DEFAULT_MAX_EVENT_BYTES, SseEventTooLarge, SseParser

Json = dict[str, Any]

API_VERSION = "v1beta"

_CONTENT_FILTERED = (
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
    "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION",
)  # fmt: skip
_FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length", **dict.fromkeys(_CONTENT_FILTERED, "content_filter")}


# --- response: GenerateContentResponse -> internal -------------------------------------------


def _finish_reason(reason: Any, *, called: bool) -> str:
    # Gemini says STOP after function calls; OpenAI clients look for `tool_calls`. Reasons
    # with no OpenAI counterpart (OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL...) become `stop`.
    mapped = _FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"
    return "tool_calls" if called and mapped == "stop" else mapped


def _parts(candidate: Json) -> list[Json]:
    content = candidate.get("content") or {}
    parts = content.get("parts", []) if isinstance(content, dict) else None
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise UpstreamProtocolError("candidate content has no parts list")
    return parts


def _text_of(parts: list[Json]) -> str:
    # Thought summaries (`thought: true`) are not answer text; OpenAI has no field for them.
    return "".join(p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought"))


def _tool_calls(parts: list[Json], *, seed: str, choice: int, first: int = 0) -> list[Json]:
    calls = []
    for n, part in enumerate((p for p in parts if "functionCall" in p), start=first):
        call = part["functionCall"]
        if not isinstance(call, dict) or not checks.name(call.get("name"), "functionCall name"):
            raise UpstreamProtocolError("functionCall part has no name")
        args = checks.obj(call.get("args"), "functionCall args") or {}
        # Gemini ids are optional; ours only need to be unique across the conversation.
        call_id = (
            checks.name(call.get("id"), "functionCall id")
            or "call_" + hashlib.sha256(f"{seed}/{choice}/{n}".encode()).hexdigest()[:24]
        )
        tool_call: Json = {
            "id": call_id,
            "type": "function",
            "function": {
                "name": call["name"],
                "arguments": checks.dumps(args, "functionCall args", ensure_ascii=False),
            },
        }
        if checks.text(part.get("thoughtSignature"), "functionCall thoughtSignature"):
            tool_call["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
        calls.append(tool_call)
    return calls


def _count(metadata: Json, field: str) -> int:
    return checks.count(metadata.get(field), f"usageMetadata.{field}") or 0


def _usage(metadata: Any) -> tuple[Json | None, Usage]:
    if metadata is None:
        return None, Usage()
    if not isinstance(metadata, dict):
        raise UpstreamProtocolError("usageMetadata is not an object")
    prompt = _count(metadata, "promptTokenCount")
    thoughts = _count(metadata, "thoughtsTokenCount")
    completion = _count(metadata, "candidatesTokenCount") + thoughts  # thinking is billed as output
    if completion > checks.MAX_TOKENS:
        raise UpstreamProtocolError("usageMetadata counts are not token counts")
    usage: Json = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": _count(metadata, "totalTokenCount") or prompt + completion,
    }
    if thoughts:
        usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    if cached := _count(metadata, "cachedContentTokenCount"):  # a part of promptTokenCount
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage, Usage(input_tokens=prompt, output_tokens=completion, cached_input_tokens=cached or None)


def _candidates(data: Json) -> list[Json]:
    candidates = data.get("candidates", [])
    if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
        raise UpstreamProtocolError("response candidates is not a list of objects")
    return candidates


def _blocked(data: Json) -> bool:
    feedback = data.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


def _seed(data: Json) -> str:
    return checks.name(data.get("responseId"), "responseId") or uuid.uuid4().hex


def gemini_chat_response(data: Json) -> tuple[ChatResponse, Usage]:
    candidates = _candidates(data)
    seed = _seed(data)
    if candidates:
        choices = [_choice(c, position, seed) for position, c in enumerate(candidates)]
    elif _blocked(data):  # the prompt itself was refused: no candidates at all
        message = {"role": "assistant", "content": ""}
        choices = [{"index": 0, "message": message, "finish_reason": "content_filter", "logprobs": None}]
    else:
        raise UpstreamProtocolError("response has neither candidates nor a prompt block reason")
    usage_body, usage = _usage(data.get("usageMetadata"))
    response: ChatResponse = {
        "id": "chatcmpl-" + seed,
        "object": "chat.completion",
        "created": int(time.time()),
        # chat_response() is not told the model it asked for; the relay may overwrite this.
        "model": checks.name(data.get("modelVersion"), "modelVersion") or "unknown",
        "choices": choices,
    }
    if usage_body is not None:
        response["usage"] = usage_body
    return response, usage


def _index(candidate: Json, position: int) -> int:
    index = checks.index(candidate.get("index"), "candidate index")
    return position if index is None else index


def _choice(candidate: Json, position: int, seed: str) -> Json:
    index = _index(candidate, position)
    parts = _parts(candidate)
    text, calls = _text_of(parts), _tool_calls(parts, seed=seed, choice=index)
    message: Json = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    finish = _finish_reason(candidate.get("finishReason"), called=bool(calls))
    return {"index": index, "message": message, "finish_reason": finish, "logprobs": None}


def gemini_error_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)  # not json.loads: it lets lone surrogates through, which no JSON writer takes
    except ValueError:
        return body_excerpt(body)
    if isinstance(data, list) and data:  # stream endpoints wrap the error in an array
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return checks.message_text(message) if isinstance(message, str) else body_excerpt(body)


# --- stream ---------------------------------------------------------------------------------


class GeminiStreamDecoder:
    """`streamGenerateContent?alt=sse`: each event a GenerateContentResponse with new parts only."""

    def __init__(self, *, model: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.state = StreamState()
        self._parser = SseParser(max_event_bytes=max_event_bytes)
        self._model = model
        self._seed = ""  # responseId of the stream, fixed by its first event
        self._created = int(time.time())
        self._started: set[int] = set()  # choices that already sent `role`
        self._calls: dict[int, int] = {}  # tool calls sent so far, per choice
        self._usage: Json | None = None
        self._finished = False

    def feed(self, data: bytes) -> list[ChatChunk]:
        try:
            events = self._parser.feed(data)
        except SseEventTooLarge as exc:
            raise UpstreamProtocolError(str(exc)) from None
        return [chunk for event in events for chunk in self._decode(event.data)]

    def close(self) -> list[ChatChunk]:
        chunks = [chunk for event in self._parser.close() for chunk in self._decode(event.data)]
        if not self._finished:
            raise UpstreamProtocolError("stream ended before a finish reason")
        self.state.done = True
        if self._usage is not None:
            chunks.append({**self._envelope(), "choices": [], "usage": self._usage})
        return chunks

    def _decode(self, data: str) -> list[ChatChunk]:
        if not data.strip():
            return []
        event = load_json_object(data.encode(), "stream event")
        if "error" in event:
            raise UpstreamProtocolError(f"provider sent an error mid-stream: {gemini_error_message(data.encode())}")
        self._note(event)
        candidates = _candidates(event)
        if not candidates and _blocked(event):
            return [self._finish(0, "content_filter")]
        chunks = []
        for position, candidate in enumerate(candidates):
            chunks.extend(self._candidate_chunks(candidate, _index(candidate, position)))
        return chunks

    def _note(self, event: Json) -> None:
        if not self._seed:
            self._seed = _seed(event)
        if checks.name(event.get("modelVersion"), "modelVersion") is not None:
            self._model = self.state.response_model = event["modelVersion"]
        usage_body, usage = _usage(event.get("usageMetadata"))
        if usage_body is not None:  # counts grow event by event; the last one is the total
            self._usage, self.state.usage = usage_body, usage

    def _candidate_chunks(self, candidate: Json, index: int) -> list[ChatChunk]:
        parts = _parts(candidate)
        delta: Json = {}
        if text := _text_of(parts):
            delta["content"] = text
        first = self._calls.get(index, 0)
        if calls := _tool_calls(parts, seed=self._seed, choice=index, first=first):
            # Gemini sends each call whole, so one delta carries its name and all its arguments.
            delta["tool_calls"] = [{"index": first + n, **call} for n, call in enumerate(calls)]
            self._calls[index] = first + len(calls)
        chunks = [self._chunk(index, delta, None)] if delta else []
        if candidate.get("finishReason"):
            reason = _finish_reason(candidate["finishReason"], called=self._calls.get(index, 0) > 0)
            chunks.append(self._finish(index, reason))
        return chunks

    def _finish(self, index: int, reason: str) -> ChatChunk:
        self._finished = True
        self.state.finish_reason = reason
        return self._chunk(index, {}, reason)

    def _chunk(self, index: int, delta: Json, finish_reason: str | None) -> ChatChunk:
        if index not in self._started:
            self._started.add(index)
            delta = {"role": "assistant", **delta}
        choice = {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return {**self._envelope(), "choices": [choice]}

    def _envelope(self) -> Json:
        return {
            "id": "chatcmpl-" + self._seed,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
        }


# --- embeddings -----------------------------------------------------------------------------


def _embedding_values(embedding: Any) -> list[float]:
    values = embedding.get("values") if isinstance(embedding, dict) else None
    if not isinstance(values, list):
        raise UpstreamProtocolError("embedding has no values list")
    return checks.float_vector(values, "embedding values")


# --- the translator -------------------------------------------------------------------------


class GeminiTranslator:
    system = "gcp.gemini"
    native_openai = False

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.server_address, self.server_port = server_of(provider.base_url)
        self._base = f"{provider.base_url.rstrip('/')}/{API_VERSION}/"
        auth = {} if provider.api_key is None else {"x-goog-api-key": provider.api_key.get_secret_value()}
        self._json_headers = {**JSON_HEADERS, **auth}
        self._sse_headers = {**SSE_HEADERS, **auth}

    @staticmethod
    def model_path(model: str) -> str:
        """`models/<id>`; full resource names (`models/...`, `tunedModels/...`) pass as they are."""
        if model.startswith(("models/", "tunedModels/")):
            return model
        return "models/" + quote(model, safe="")

    def _url(self, model: str, method: str) -> str:
        return f"{self._base}{self.model_path(model)}:{method}"

    def chat_request(self, request: ChatRequest, *, model: str, stream: bool) -> UpstreamRequest:
        body = json_body(gemini_chat_body(request))
        if stream:
            url = self._url(model, "streamGenerateContent") + "?alt=sse"
            return UpstreamRequest(url=url, headers=dict(self._sse_headers), body=body, stream=True)
        return UpstreamRequest(url=self._url(model, "generateContent"), headers=dict(self._json_headers), body=body)

    def chat_response(self, body: bytes) -> tuple[ChatResponse, Usage]:
        return gemini_chat_response(load_json_object(body, "response"))

    def stream_decoder(self, *, model: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> GeminiStreamDecoder:
        return GeminiStreamDecoder(model=model, max_event_bytes=max_event_bytes)

    def count_tokens_request(self, request: ChatRequest, *, model: str) -> UpstreamRequest:
        """`models/<id>:countTokens` of the generateContent call `chat_request` would send."""
        generate = {"model": self.model_path(model), **gemini_chat_body(request)}
        body = json_body({"generateContentRequest": generate})
        return UpstreamRequest(url=self._url(model, "countTokens"), headers=dict(self._json_headers), body=body)

    def count_tokens_response(self, body: bytes) -> int:
        counted = checks.count(load_json_object(body, "countTokens response").get("totalTokens"), "totalTokens")
        if counted is None:
            raise UpstreamProtocolError("countTokens response has no totalTokens")
        return counted

    def embeddings_request(self, request: EmbeddingsRequest, *, model: str) -> UpstreamRequest:
        method, body = gemini_embeddings_body(request, model_path=self.model_path(model))
        url = self._url(model, method)
        return UpstreamRequest(url=url, headers=dict(self._json_headers), body=json_body(body))

    def embeddings_response(self, body: bytes, *, model: str) -> tuple[EmbeddingsResponse, Usage]:
        """Floats always: the OpenAI front end applies `encoding_format: base64` for every provider."""
        data = load_json_object(body, "embeddings response")
        if isinstance(data.get("embeddings"), list):
            vectors = [_embedding_values(e) for e in data["embeddings"]]
        elif "embedding" in data:
            vectors = [_embedding_values(data["embedding"])]
        else:
            raise UpstreamProtocolError("embeddings response has neither embedding nor embeddings")
        metadata = checks.obj(data.get("usageMetadata"), "usageMetadata")
        tokens = checks.count(metadata.get("promptTokenCount"), "usageMetadata.promptTokenCount") if metadata else None
        response = {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "model": model,
            # Gemini usually reports no token counts: zeros keep the OpenAI shape, Usage says unknown.
            "usage": {"prompt_tokens": tokens or 0, "total_tokens": tokens or 0},
        }
        return response, Usage(input_tokens=tokens, output_tokens=None)

    def error_message(self, status: int, body: bytes) -> str:
        return gemini_error_message(body)
