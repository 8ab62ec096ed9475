"""Internal requests -> Google Gemini API request bodies: `GenerateContentRequest` and embed requests.

Used by `GeminiTranslator` (`proxy.providers.gemini`), which adds URLs and
headers. The internal (OpenAI Chat Completions) form maps onto
`GenerateContentRequest` almost one to one; the differences that shape this
module:

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

Pure, no I/O. Requests Gemini cannot take raise `ApiError` 400 naming the field.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from proxy.errors import bad_request, echo
from proxy.json_limits import loads_bounded
from proxy.providers.base import ChatRequest, EmbeddingsRequest
from proxy.providers.chat_fields import stop_sequences, texts

Json = dict[str, Any]

# Documented for histories whose function calls never came from Gemini (or lost their signature).
DUMMY_THOUGHT_SIGNATURE = "skip_thought_signature_validator"

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
    if not isinstance(request, dict):
        raise bad_request("request body must be a JSON object")
    system, contents = _contents(request.get("messages"))
    body: Json = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    tools = request.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise bad_request("tools must be an array", param="tools")
        body["tools"] = [{"functionDeclarations": [_declaration(t, i) for i, t in enumerate(tools)]}]
        if request.get("tool_choice") is not None:
            body["toolConfig"] = {"functionCallingConfig": _calling_config(request["tool_choice"])}
    config = _generation_config(request)
    if config:
        body["generationConfig"] = config
    return body


def _contents(messages: Any) -> tuple[list[Json], list[Json]]:
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty array", param="messages")
    system: list[Json] = []
    contents: list[Json] = []
    call_names: dict[str, str] = {}  # tool_call_id -> function name, latest assistant turn wins
    previous_role = None
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object", param=where)
        role = message.get("role")
        if role in ("system", "developer"):
            # Gemini has one system instruction: mid-conversation ones join it, losing their position.
            system.extend({"text": t} for t in texts(message.get("content"), where) if t)
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
            raise bad_request(f"{where}.role {echo(role)} cannot be sent to Gemini", param=f"{where}.role")
        previous_role = role
    return system, contents


def _user_parts(content: Any, where: str) -> list[Json]:
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, list):
        raise bad_request(f"{where}.content must be a string or an array of parts", param=f"{where}.content")
    return [_user_part(part, f"{where}.content[{j}]") for j, part in enumerate(content)]


def _user_part(part: Any, where: str) -> Json:
    if not isinstance(part, dict):
        raise bad_request(f"{where} must be a content part object", param=where)
    kind = part.get("type")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise bad_request(f"{where}.text must be a string", param=f"{where}.text")
        return {"text": part["text"]}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return _image_part(url, where)  # `detail` has no Gemini equivalent
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
            raise bad_request(f"{where}.input_audio.data must be a string", param=f"{where}.input_audio")
        audio_format = audio.get("format", "wav")
        if not isinstance(audio_format, str):
            raise bad_request(f"{where}.input_audio.format must be a string", param=f"{where}.input_audio.format")
        return {"inlineData": {"mimeType": f"audio/{audio_format}", "data": audio["data"]}}
    if kind == "file":
        file = part.get("file")
        data = file.get("file_data") if isinstance(file, dict) else None
        if isinstance(data, str) and data.startswith("data:"):
            return _data_url_part(data, where)
        raise bad_request(f"{where}: Gemini takes files inline only, as a data: URL in file_data", param=where)
    raise bad_request(f"{where}: part type {echo(kind)} cannot be sent to Gemini", param=where)


def _image_part(url: Any, where: str) -> Json:
    if not isinstance(url, str):
        raise bad_request(f"{where}.image_url.url must be a string", param=f"{where}.image_url.url")
    if url.startswith("data:"):
        return _data_url_part(url, where)
    if url.startswith(("https://", "http://")):
        try:
            suffix = urlsplit(url).path.lower().rpartition(".")[2]
        except ValueError:  # e.g. an unclosed IPv6 bracket
            raise bad_request(f"{where}.image_url.url is not a valid URL", param=f"{where}.image_url.url") from None
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
    parts: list[Json] = [{"text": t} for t in texts(message.get("content"), where) if t]
    calls = message.get("tool_calls")
    if calls is None:
        return parts
    if not isinstance(calls, list):
        raise bad_request(f"{where}.tool_calls must be an array", param=f"{where}.tool_calls")
    for k, call in enumerate(calls):
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
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    if not isinstance(signature, str):
        signature = None
    if signature or first:  # Gemini checks the first call of each turn only
        part["thoughtSignature"] = signature or DUMMY_THOUGHT_SIGNATURE
    return part


def _arguments(arguments: Any, where: str) -> Json:
    if arguments in (None, ""):
        return {}
    if not isinstance(arguments, str):
        raise bad_request(f"{where} must be a string of JSON", param=where)
    try:
        args = loads_bounded(arguments)
    except ValueError:
        raise bad_request(f"{where} is not valid JSON (or nests too deep)", param=where) from None
    if not isinstance(args, dict):
        raise bad_request(f"{where} must be a JSON object for Gemini", param=where)
    return args


def _function_response(message: Json, where: str, call_names: dict[str, str]) -> Json:
    if message.get("role") == "function":  # the deprecated form names the function itself
        name = message.get("name")
    else:
        call_id = message.get("tool_call_id")
        name = call_names.get(call_id) if isinstance(call_id, str) else None
    if not isinstance(name, str):
        raise bad_request(
            f"{where}.tool_call_id {echo(message.get('tool_call_id'))} matches no tool call of an earlier "
            "assistant message; Gemini needs the function's name",
            param=f"{where}.tool_call_id",
        )
    text = "".join(texts(message.get("content"), where))
    return {"functionResponse": {"name": name, "response": _response_object(text)}}


def _response_object(text: str) -> Json:
    try:
        value = loads_bounded(text)
    except ValueError:
        value = None
    # Gemini wants an object; `output` is the key its docs name for a plain function output.
    return value if isinstance(value, dict) else {"output": text}


def _declaration(tool: Any, i: int) -> Json:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or tool.get("type", "function") != "function":
        raise bad_request(f"tools[{i}]: only function tools can be sent to Gemini", param=f"tools[{i}].type")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise bad_request(f"tools[{i}].function.name must be a non-empty string", param=f"tools[{i}].function.name")
    declaration: Json = {"name": name}
    description = function.get("description")
    if description:
        if not isinstance(description, str):
            raise bad_request(
                f"tools[{i}].function.description must be a string", param=f"tools[{i}].function.description"
            )
        declaration["description"] = description
    if function.get("parameters") is not None:
        if not isinstance(function["parameters"], dict):
            raise bad_request(
                f"tools[{i}].function.parameters must be an object", param=f"tools[{i}].function.parameters"
            )
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
    raise bad_request(f"tool_choice {echo(choice)} cannot be sent to Gemini", param="tool_choice")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _generation_config(request: ChatRequest) -> Json:
    config: Json = {}
    for field, key in _GENERATION_FIELDS.items():
        value = request.get(field)
        if value is None:
            continue
        if not (_is_int(value) if field in ("n", "seed") else _is_number(value)):
            raise bad_request(f"{field} must be {'an integer' if field in ('n', 'seed') else 'a number'}", param=field)
        config[key] = value
    max_tokens = request.get("max_completion_tokens")
    field = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, field = request.get("max_tokens"), "max_tokens"
    if max_tokens is not None:
        if not _is_int(max_tokens):
            raise bad_request(f"{field} must be an integer", param=field)
        config["maxOutputTokens"] = max_tokens
    if (stop := stop_sequences(request)) is not None:
        config["stopSequences"] = stop
    response_format = request.get("response_format")
    if response_format is None:
        return config
    if not isinstance(response_format, dict):
        raise bad_request("response_format must be an object", param="response_format")
    kind = response_format.get("type")
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if schema is not None:
            if not isinstance(schema, dict):
                raise bad_request(
                    "response_format.json_schema.schema must be an object", param="response_format.json_schema.schema"
                )
            config["responseJsonSchema"] = schema  # JSON Schema as-is, see _declaration
    return config


# --- request: internal -> embedContent / batchEmbedContents --------------------------------


def gemini_embeddings_body(request: EmbeddingsRequest, *, model_path: str) -> tuple[str, Json]:
    """The embed method to call (`embedContent` or `batchEmbedContents`) and its request body.

    `model_path` is the model's resource name, which each entry of a batch repeats.
    """
    options: Json = {}
    if not isinstance(request, dict):
        raise bad_request("request body must be a JSON object")
    inputs = request.get("input")
    dimensions = request.get("dimensions")
    if dimensions is not None:
        if not _is_int(dimensions):
            raise bad_request("dimensions must be an integer", param="dimensions")
        options["outputDimensionality"] = dimensions
    if isinstance(inputs, str):
        body: Json = {"content": {"parts": [{"text": inputs}]}, **options}
        method = "embedContent"
    elif isinstance(inputs, list) and inputs and all(isinstance(x, str) for x in inputs):
        body = {"requests": [{"model": model_path, "content": {"parts": [{"text": x}]}, **options} for x in inputs]}
        method = "batchEmbedContents"
    else:
        raise bad_request(
            "Gemini embeds text only: 'input' must be a string or an array of strings, not token arrays", param="input"
        )
    return method, body
