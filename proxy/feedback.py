"""`POST /v1/feedback`: an app's quality score for a request an experiment served.

Body: {"request_id": "<the x-request-id the sidecar returned>", "score": <number>}. The score
counts in the quality of the arm that served the request, once per request, on the sidecar that
served it (the id is only known there: apps send feedback to their own sidecar, as they send
their requests). Errors are OpenAI-shaped: 400 for a body that is not such an object, 404 for
an id this sidecar does not know (never served in an experiment, too old, or already scored).
"""

from __future__ import annotations

import json

from aiohttp import web

from proxy.errors import ApiError, bad_request, echo
from proxy.experiments import REQUEST_ID_HEADER, REQUEST_ID_KEY, ExperimentCounts, valid_score
from proxy.frontends.openai_chat import OpenAIFrontend
from proxy.request.responses import error_response, json_response

EXPERIMENTS = web.AppKey("experiments", ExperimentCounts)
MAX_FEEDBACK_BYTES = 4096
_OPENAI = OpenAIFrontend()


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the id of a request an experiment served goes out with its answer's
    headers, a stream's included (they leave before the body), and with an error answer too."""
    request_id = request.get(REQUEST_ID_KEY)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id


async def feedback(request: web.Request) -> web.Response:
    try:
        request_id, score = await _parse(request)
    except ApiError as error:
        return error_response(_OPENAI, error)
    if not request.app[EXPERIMENTS].feedback(request_id, score):
        return error_response(
            _OPENAI,
            ApiError(
                404,
                f"no request {echo(request_id)} to score here: use the x-request-id this sidecar returned for a "
                "request an experiment served, once, soon after",
                "invalid_request_error",
                "unknown_request_id",
                "request_id",
            ),
        )
    return json_response({"object": "feedback", "request_id": request_id, "score": score, "recorded": True})


async def _parse(request: web.Request) -> tuple[str, float]:
    raw = await request.content.read(MAX_FEEDBACK_BYTES + 1)
    if len(raw) > MAX_FEEDBACK_BYTES:
        raise bad_request(f"the feedback body is over {MAX_FEEDBACK_BYTES} bytes", code="body_too_large")
    try:
        body = json.loads(raw)
    except ValueError:
        raise bad_request('the body must be JSON: {"request_id": ..., "score": ...}', code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request(f"the body must be a JSON object, not {echo(body)}", code="invalid_json")
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise bad_request(
            f"request_id must be the x-request-id string the sidecar returned, not {echo(request_id)}",
            param="request_id",
            code="invalid_request_id",
        )
    score = valid_score(body.get("score"))
    if score is None:
        raise bad_request(
            f"score must be a finite number, at most 1000000 either way, not {echo(body.get('score'))}",
            param="score",
            code="invalid_score",
        )
    return request_id, score
