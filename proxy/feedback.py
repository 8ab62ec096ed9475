"""`POST /v1/feedback`: an app's quality score for a request an experiment served.

Body: {"request_id": "<the x-request-id the sidecar returned>", "score": <number>}. The score
counts in the quality of the arm that served the request, once per request, on the sidecar that
served it (the id is only known there: apps send feedback to their own sidecar, as they send
their requests). Errors are OpenAI-shaped: 400 for a body that is not such an object, 404 for
an id this sidecar does not know (never served in an experiment, too old, or already scored).

Or on a later request, in a header: `x-modelway-feedback: <request id>=<score>` (several
comma-separated, at most MAX_HEADER_SCORES), counted the same way when that request's answer
starts. The request itself is served whatever the header says (a score is never worth failing a
call for): the answer's `x-modelway-feedback-result` says, pair by pair, `recorded`,
`unknown_request_id` or `invalid`. The header is the sidecar's: no provider is sent it (upstream
requests carry only the headers the sidecar builds).
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
FEEDBACK_HEADER = "x-modelway-feedback"
FEEDBACK_RESULT_HEADER = "x-modelway-feedback-result"
MAX_HEADER_SCORES = 16
_OPENAI = OpenAIFrontend()


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the id of a request an experiment served goes out with its answer's
    headers, a stream's included (they leave before the body), and with an error answer too.
    Scores sent in the feedback header are counted here too: one header lookup on every answer."""
    request_id = request.get(REQUEST_ID_KEY)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
    scores = request.headers.get(FEEDBACK_HEADER)
    if scores is not None:
        response.headers[FEEDBACK_RESULT_HEADER] = score_header(request.app[EXPERIMENTS], scores)


def score_header(experiments: ExperimentCounts, value: str) -> str:
    """Counts each `<request id>=<score>` of a feedback header; the outcomes, comma-separated, in order."""
    outcomes = []
    for item in value.split(",")[:MAX_HEADER_SCORES]:
        request_id, _, raw = item.strip().rpartition("=")
        try:
            score = valid_score(float(raw))
        except ValueError:
            score = None
        if not request_id or score is None:
            outcomes.append("invalid")
        else:
            outcomes.append("recorded" if experiments.feedback(request_id, score) else "unknown_request_id")
    return ", ".join(outcomes)


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
