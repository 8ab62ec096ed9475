"""Fake Google Vertex AI: Gemini and Anthropic publisher models, as Vertex serves them.

POST /v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent
POST ...:streamGenerateContent?alt=sse     (Gemini's body and answers: `gemini_fake.answer`)
POST ...:countTokens                       (the generateContent body's fields -> `totalTokens`)
POST /v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model}:rawPredict
POST ...:streamRawPredict                  (Anthropic's Messages body without `model`, with
                                            `anthropic_version: vertex-2023-10-16`; Anthropic's
                                            answers and SSE events: `anthropic_fake.answer`)
POST .../publishers/anthropic/models/count-tokens:rawPredict
                                           (Anthropic's count_tokens body, `model` in it, any
                                            `anthropic_version` or none -> `{"input_tokens": n}`)

Auth: `Authorization: Bearer <access token>` issued by the fake Google token endpoint or metadata
server (`google_fake.check_access_token`; an expired one is refused), or for Gemini an API key in
`x-goog-api-key` (express mode). Refusals are Google's: 401 UNAUTHENTICATED, in Google's error
shape, whichever the publisher.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import anthropic_fake, gemini_fake
from .behaviour import STATE, Behaviour, FakeState, add_control_routes, before_reply, record
from .google_fake import check_access_token

ANTHROPIC_VERSION = "vertex-2023-10-16"
COUNT_TOKENS = "count-tokens"  # the one "model" Claude's token counting is served at
UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)


def create_app(api_key: str) -> web.Application:
    app = web.Application()
    app[STATE] = FakeState(api_key=api_key)
    add_control_routes(app)
    app.router.add_post("/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{target}", _call)
    return app


def _unauthenticated() -> web.Response:
    info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "ACCESS_TOKEN_TYPE_UNSUPPORTED",
        "domain": "googleapis.com",
        "metadata": {"service": "aiplatform.googleapis.com", "method": "google.cloud.aiplatform.v1.PredictionService"},
    }
    return gemini_fake.gemini_error(401, UNAUTHENTICATED, [info])


async def _call(request: web.Request) -> web.StreamResponse:
    body: Any = await record(request)
    publisher = request.match_info["publisher"]
    model, _, method = request.match_info["target"].partition(":")
    behaviour = request.app[STATE].next_behaviour()
    methods = {
        "google": ("generateContent", "streamGenerateContent", "countTokens"),
        "anthropic": ("rawPredict", "streamRawPredict"),
    }
    if publisher not in methods or method not in methods[publisher]:
        return gemini_fake.gemini_error(404, f"Publisher Model `{publisher}/{model}` method `{method}` not found.")
    stream = method.startswith("stream")
    if (early := await before_reply(behaviour, gemini_fake.gemini_error, stream=stream)) is not None:
        return early
    bearer = request.headers.get("authorization", "")
    if bearer.startswith("Bearer "):
        if check_access_token(bearer.removeprefix("Bearer ")) is not None:
            return _unauthenticated()
    elif publisher != "google" or request.headers.get("x-goog-api-key") != request.app[STATE].api_key:
        return _unauthenticated()
    if publisher == "google":
        return await gemini_fake.answer(request, body, model=model, method=method, behaviour=behaviour)
    if not isinstance(body, dict):
        return anthropic_fake.anthropic_error(400, "There was an error parsing the body of your request.")
    if model == COUNT_TOKENS:
        if stream:
            return gemini_fake.gemini_error(404, f"Publisher Model `anthropic/{model}` method `{method}` not found.")
        return await _count_tokens(request, body, behaviour)
    if body.get("anthropic_version") != ANTHROPIC_VERSION:
        return anthropic_fake.anthropic_error(400, "anthropic_version: Input should be 'vertex-2023-10-16'")
    if "model" in body:
        return anthropic_fake.anthropic_error(400, "model: Extra inputs are not permitted")
    if (body.get("stream") is True) != stream:
        return anthropic_fake.anthropic_error(400, f"stream: {method} needs stream {'true' if stream else 'false'}")
    return await anthropic_fake.answer(request, {**body, "model": model}, behaviour=behaviour, stream=stream)


async def _count_tokens(request: web.Request, body: dict[str, Any], behaviour: Behaviour) -> web.StreamResponse:
    """Claude's count-tokens: the model is the body's. `anthropic_version` may be left out (Google's
    documented example has none) or be any string (the anthropic SDK's Vertex client sends its own
    API version there)."""
    if not isinstance(body.get("anthropic_version", ""), str):
        return anthropic_fake.anthropic_error(400, "anthropic_version: Input should be a valid string")
    if not isinstance(body.get("model"), str):
        return anthropic_fake.anthropic_error(400, "model: Field required")
    for extra in ("max_tokens", "stream"):
        if extra in body:
            return anthropic_fake.anthropic_error(400, f"{extra}: Extra inputs are not permitted")
    counted = {key: value for key, value in body.items() if key != "anthropic_version"}
    return await anthropic_fake.answer(request, counted, behaviour=behaviour, stream=False, counting=True)
