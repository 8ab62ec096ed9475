"""Google Gemini API (`generativelanguage`, v1beta): generateContent, its SSE stream, and embeddings.

The internal (OpenAI Chat Completions) form maps onto `GenerateContentRequest`
almost one to one; the differences that shape this module:

- Gemini names function results by function NAME, OpenAI by tool-call id, so
  tool messages look the name up in the assistant turns before them.
- Gemini 3 models want the `thoughtSignature` of a function call back in the
  next turn. Responses carry it where Google's own OpenAI-compatible endpoint
  does (`tool_calls[].extra_content.google.thought_signature`, which the
  OpenAI SDKs send back untouched); histories without one get the dummy value
  Google documents for that case.
- Tool parameters and response schemas go out as JSON Schema
  (`parametersJsonSchema`, `responseJsonSchema`) rather than the proto
  `Schema` fields, which reject `additionalProperties` and type arrays, both
  of which OpenAI strict-mode schemas carry on every object.
- Streams are whole `GenerateContentResponse` objects per SSE event, with no
  end marker: a finish reason is what proves the stream complete.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any
from urllib.parse import quote, urlsplit

from proxy.errors import bad_request
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
)
from proxy.providers.openai import JSON_HEADERS, SSE_HEADERS, load_json_object, server_of
from proxy.snapshot import Provider
from proxy.sse import SseParser

Json = dict[str, Any]

API_VERSION = "v1beta"
# Documented for histories whose function calls never came from Gemini (or lost their signature).
DUMMY_THOUGHT_SIGNATURE = "skip_thought_signature_validator"

_CONTENT_FILTERED = (
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
    "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION",
)  # fmt: skip
_FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length", **dict.fromkeys(_CONTENT_FILTERED, "content_filter")}
# Only a guess from the URL's extension: Gemini needs a MIME type for `fileData`
# and we do not fetch the URL to learn it. Unknown extensions are sent as JPEG.
_IMAGE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}
_TOOL_CHOICE_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_GENERATION_FIELDS = {
    "temperature": "temperature",
    "top_p": "topP",
    "n": "candidateCount",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "seed": "seed",
}


# --- request: internal -> GenerateContentRequest -------------------------------------------


def gemini_chat_body(request: ChatRequest) -> Json:
    system, contents = _contents(request.get("messages") or [])
    body: Json = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if request.get("tools"):
        body["tools"] = [{"functionDeclarations": [_declaration(t, i) for i, t in enumerate(request["tools"])]}]
    if request.get("tools") and request.get("tool_choice") is not None:
        body["toolConfig"] = {"functionCallingConfig": _calling_config(request["tool_choice"])}
    config = _generation_config(request)
    if config:
        body["generationConfig"] = config
    return body


def _contents(messages: list[Json]) -> tuple[list[Json], list[Json]]:
    system: list[Json] = []
    contents: list[Json] = []
    call_names: dict[str, str] = {}  # tool_call_id -> function name, latest assistant turn wins
    previous_role = None
    for i, message in enumerate(messages):
        role, where = message.get("role"), f"messages[{i}]"
        if role in ("system", "developer"):
            # Gemini has one system instruction: mid-conversation ones join it, losing their position.
            system.extend({"text": t} for t in _texts(message.get("content"), where) if t)
        elif role == "user":
            contents.append({"role": "user", "parts": _user_parts(message.get("content"), where)})
        elif role == "assistant":
            parts = _model_parts(message, where, call_names)
            if parts:  # Gemini rejects a content without parts
                contents.append({"role": "model", "parts": parts})
        elif role in ("tool", "function"):
            part = _function_response(message, where, call_names)
            if previous_role in ("tool", "function"):
                contents[-1]["parts"].append(part)  # parallel results answer one model turn together
            else:
                contents.append({"role": "user", "parts": [part]})
        else:
            raise bad_request(f"{where}.role {role!r} cannot be sent to Gemini", param=f"{where}.role")
        previous_role = role
    return system, contents


def _texts(content: Any, where: str) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    texts = []
    for j, part in enumerate(content):
        if part.get("type") not in ("text", "refusal"):
            raise bad_request(f"{where}.content[{j}]: only text parts are allowed here", param=f"{where}.content")
        texts.append(part.get("text") or part.get("refusal") or "")
    return texts


def _user_parts(content: Any, where: str) -> list[Json]:
    if isinstance(content, str):
        return [{"text": content}]
    return [_user_part(part, f"{where}.content[{j}]") for j, part in enumerate(content or [])]


def _user_part(part: Json, where: str) -> Json:
    kind = part.get("type")
    if kind == "text":
        return {"text": part.get("text", "")}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return _image_part(url, where)  # `detail` has no Gemini equivalent
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        return {"inlineData": {"mimeType": f"audio/{audio.get('format', 'wav')}", "data": audio.get("data", "")}}
    if kind == "file":
        data = (part.get("file") or {}).get("file_data")
        if isinstance(data, str) and data.startswith("data:"):
            return _data_url_part(data, where)
        raise bad_request(f"{where}: Gemini takes files inline only, as a data: URL in file_data", param=where)
    raise bad_request(f"{where}: part type {kind!r} cannot be sent to Gemini", param=where)


def _image_part(url: Any, where: str) -> Json:
    if not isinstance(url, str):
        raise bad_request(f"{where}.image_url.url must be a string", param=where)
    if url.startswith("data:"):
        return _data_url_part(url, where)
    if url.startswith(("https://", "http://")):
        suffix = urlsplit(url).path.lower().rpartition(".")[2]
        mime = _IMAGE_TYPES.get(suffix, "image/jpeg")
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise bad_request(f"{where}: image URLs must be data:, http: or https:", param=where)


def _data_url_part(url: str, where: str) -> Json:
    header, comma, data = url[len("data:") :].partition(",")
    mime, _, encoding = header.partition(";")
    if not comma or encoding != "base64" or not mime:
        raise bad_request(f"{where}: data: URLs must look like data:<mime type>;base64,<data>", param=where)
    return {"inlineData": {"mimeType": mime, "data": data}}


def _model_parts(message: Json, where: str, call_names: dict[str, str]) -> list[Json]:
    parts: list[Json] = [{"text": t} for t in _texts(message.get("content"), where) if t]
    for k, call in enumerate(message.get("tool_calls") or []):
        part = _function_call_part(call, f"{where}.tool_calls[{k}]", first=k == 0)
        parts.append(part)
        if isinstance(call.get("id"), str):
            call_names[call["id"]] = part["functionCall"]["name"]
    return parts


def _function_call_part(call: Any, where: str, *, first: bool) -> Json:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise bad_request(f"{where}: only named function calls can be sent to Gemini", param=where)
    args = _arguments(function.get("arguments"), f"{where}.function.arguments")
    part: Json = {"functionCall": {"name": function["name"], "args": args}}
    signature = ((call.get("extra_content") or {}).get("google") or {}).get("thought_signature")
    if signature or first:  # Gemini checks the first call of each turn only
        part["thoughtSignature"] = signature or DUMMY_THOUGHT_SIGNATURE
    return part


def _arguments(arguments: Any, where: str) -> Json:
    if arguments in (None, ""):
        return {}
    try:
        args = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        raise bad_request(f"{where} is not valid JSON", param=where) from None
    if not isinstance(args, dict):
        raise bad_request(f"{where} must be a JSON object for Gemini", param=where)
    return args


def _function_response(message: Json, where: str, call_names: dict[str, str]) -> Json:
    if message.get("role") == "function":  # the deprecated form names the function itself
        name = message.get("name")
    else:
        name = call_names.get(message.get("tool_call_id", ""))
    if not isinstance(name, str):
        raise bad_request(
            f"{where}.tool_call_id {message.get('tool_call_id')!r} matches no tool call of an earlier "
            "assistant message; Gemini needs the function's name",
            param=f"{where}.tool_call_id",
        )
    text = "".join(_texts(message.get("content"), where))
    return {"functionResponse": {"name": name, "response": _response_object(text)}}


def _response_object(text: str) -> Json:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    # Gemini wants an object; `output` is the key its docs name for a plain function output.
    return value if isinstance(value, dict) else {"output": text}


def _declaration(tool: Json, i: int) -> Json:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or tool.get("type", "function") != "function":
        raise bad_request(f"tools[{i}]: only function tools can be sent to Gemini", param=f"tools[{i}].type")
    declaration: Json = {"name": function.get("name")}
    if function.get("description"):
        declaration["description"] = function["description"]
    if function.get("parameters") is not None:
        # JSON Schema as the client wrote it: `parameters` (the proto Schema) would 400 on
        # `additionalProperties`, `$schema`, type arrays... `strict` has no Gemini equivalent.
        declaration["parametersJsonSchema"] = function["parameters"]
    return declaration


def _calling_config(choice: Any) -> Json:
    if isinstance(choice, str) and choice in _TOOL_CHOICE_MODES:
        return {"mode": _TOOL_CHOICE_MODES[choice]}
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"mode": "ANY", "allowedFunctionNames": [function["name"]]}
    raise bad_request(f"tool_choice {choice!r} cannot be sent to Gemini", param="tool_choice")


def _generation_config(request: ChatRequest) -> Json:
    config: Json = {key: request[field] for field, key in _GENERATION_FIELDS.items() if request.get(field) is not None}
    max_tokens = request.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = request.get("max_tokens")
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = request.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    response_format = request.get("response_format") or {}
    if response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema is not None:
            config["responseJsonSchema"] = schema  # JSON Schema as-is, see _declaration
    return config


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
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise UpstreamProtocolError("functionCall part has no name")
        args = call.get("args") or {}
        # Gemini ids are optional; ours only need to be unique across the conversation.
        call_id = call.get("id") or "call_" + hashlib.sha256(f"{seed}/{choice}/{n}".encode()).hexdigest()[:24]
        tool_call: Json = {
            "id": call_id,
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(args, ensure_ascii=False)},
        }
        if part.get("thoughtSignature"):
            tool_call["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
        calls.append(tool_call)
    return calls


def _usage(metadata: Any) -> tuple[Json | None, Usage]:
    if not isinstance(metadata, dict):
        return None, Usage()
    prompt = metadata.get("promptTokenCount") or 0
    thoughts = metadata.get("thoughtsTokenCount") or 0
    completion = (metadata.get("candidatesTokenCount") or 0) + thoughts  # thinking is billed as output
    usage: Json = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": metadata.get("totalTokenCount") or prompt + completion,
    }
    if thoughts:
        usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    if metadata.get("cachedContentTokenCount"):
        usage["prompt_tokens_details"] = {"cached_tokens": metadata["cachedContentTokenCount"]}
    return usage, Usage(input_tokens=prompt, output_tokens=completion)


def _candidates(data: Json) -> list[Json]:
    candidates = data.get("candidates", [])
    if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
        raise UpstreamProtocolError("response candidates is not a list of objects")
    return candidates


def _blocked(data: Json) -> bool:
    feedback = data.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


def gemini_chat_response(data: Json) -> tuple[ChatResponse, Usage]:
    candidates = _candidates(data)
    seed = data.get("responseId") or uuid.uuid4().hex
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
        "model": data.get("modelVersion") or "unknown",
        "choices": choices,
    }
    if usage_body is not None:
        response["usage"] = usage_body
    return response, usage


def _choice(candidate: Json, position: int, seed: str) -> Json:
    index = candidate.get("index", position)
    parts = _parts(candidate)
    text, calls = _text_of(parts), _tool_calls(parts, seed=seed, choice=index)
    message: Json = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    finish = _finish_reason(candidate.get("finishReason"), called=bool(calls))
    return {"index": index, "message": message, "finish_reason": finish, "logprobs": None}


def gemini_error_message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(data, list) and data:  # stream endpoints wrap the error in an array
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else body[:200].decode("utf-8", "replace")


# --- stream ---------------------------------------------------------------------------------


class GeminiStreamDecoder:
    """`streamGenerateContent?alt=sse`: each event a GenerateContentResponse with new parts only."""

    def __init__(self, *, model: str) -> None:
        self.state = StreamState()
        self._parser = SseParser()
        self._model = model
        self._seed = ""  # responseId of the stream, fixed by its first event
        self._created = int(time.time())
        self._started: set[int] = set()  # choices that already sent `role`
        self._calls: dict[int, int] = {}  # tool calls sent so far, per choice
        self._usage: Json | None = None
        self._finished = False

    def feed(self, data: bytes) -> list[ChatChunk]:
        return [chunk for event in self._parser.feed(data) for chunk in self._decode(event.data)]

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
            chunks.extend(self._candidate_chunks(candidate, candidate.get("index", position)))
        return chunks

    def _note(self, event: Json) -> None:
        if not self._seed:
            self._seed = event.get("responseId") or uuid.uuid4().hex
        if isinstance(event.get("modelVersion"), str):
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
    return values


# --- the translator -------------------------------------------------------------------------


class GeminiTranslator:
    system = "gcp.gemini"

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
        body = json.dumps(gemini_chat_body(request)).encode()
        if stream:
            url = self._url(model, "streamGenerateContent") + "?alt=sse"
            return UpstreamRequest(url=url, headers=dict(self._sse_headers), body=body, stream=True)
        return UpstreamRequest(url=self._url(model, "generateContent"), headers=dict(self._json_headers), body=body)

    def chat_response(self, body: bytes) -> tuple[ChatResponse, Usage]:
        return gemini_chat_response(load_json_object(body, "response"))

    def stream_decoder(self, *, model: str) -> GeminiStreamDecoder:
        return GeminiStreamDecoder(model=model)

    def embeddings_request(self, request: EmbeddingsRequest, *, model: str) -> UpstreamRequest:
        inputs = request.get("input")
        options: Json = {}
        if request.get("dimensions") is not None:
            options["outputDimensionality"] = request["dimensions"]
        if isinstance(inputs, str):
            body: Json = {"content": {"parts": [{"text": inputs}]}, **options}
            url = self._url(model, "embedContent")
        elif isinstance(inputs, list) and inputs and all(isinstance(x, str) for x in inputs):
            name = self.model_path(model)
            body = {"requests": [{"model": name, "content": {"parts": [{"text": x}]}, **options} for x in inputs]}
            url = self._url(model, "batchEmbedContents")
        else:
            raise bad_request(
                "Gemini embeds text only: 'input' must be a string or an array of strings, not token arrays",
                param="input",
            )
        return UpstreamRequest(url=url, headers=dict(self._json_headers), body=json.dumps(body).encode())

    def embeddings_response(self, body: bytes, *, model: str) -> tuple[EmbeddingsResponse, Usage]:
        """Floats always: the OpenAI front end applies `encoding_format: base64` for every provider."""
        data = load_json_object(body, "embeddings response")
        if isinstance(data.get("embeddings"), list):
            vectors = [_embedding_values(e) for e in data["embeddings"]]
        elif "embedding" in data:
            vectors = [_embedding_values(data["embedding"])]
        else:
            raise UpstreamProtocolError("embeddings response has neither embedding nor embeddings")
        metadata = data.get("usageMetadata")
        tokens = metadata.get("promptTokenCount") if isinstance(metadata, dict) else None
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
