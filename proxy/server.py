"""The sidecar's HTTP front door: OpenAI- and Anthropic-compatible endpoints.

Each endpoint hands its request to the request path (`proxy.request.flow`: parse, classify,
plan, admit, attempt, account); this module wires the app and keeps every answer JSON, also
for paths no endpoint takes, requests aiohttp cannot parse, and exceptions no stage expected.

The OpenAI front end (chat completions, embeddings, models) is imported with this module; the
Anthropic Messages, count_tokens and Responses endpoints import theirs on their first request
(`proxy.deferred_frontend`): most apps call one API, and every pod pays for what it imports.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from aiohttp import web

from proxy.deferred_frontend import DeferredFrontend
from proxy.egress import EgressSettings
from proxy.errors import ApiError, clip
from proxy.experiments import ExperimentCounts
from proxy.feedback import EXPERIMENTS, add_request_id, feedback
from proxy.frontends.anthropic_errors import AnthropicErrors
from proxy.frontends.base import ErrorShape
from proxy.frontends.openai_chat import OpenAIFrontend, models_list
from proxy.http_client import AnswerLimits, HttpClient
from proxy.policy.audit import AuditLog
from proxy.request.access_log import AccessLog
from proxy.request.account import Accounting
from proxy.request.admit import Admission
from proxy.request.attempt import Attempts
from proxy.request.backpressure import Backpressure, BackpressureSettings
from proxy.request.flow import RequestPath
from proxy.request.guard import Guard
from proxy.request.relay import ClientGone, Relay
from proxy.request.responses import error_response
from proxy.runtime import RuntimeHolder
from proxy.telemetry import Telemetry

if TYPE_CHECKING:  # imported by their endpoints' first requests (build_app)
    from proxy.frontends.anthropic_messages import AnthropicFrontend
    from proxy.frontends.openai_responses import ResponsesFrontend
    from proxy.request.count_tokens import TokenCounting

log = logging.getLogger("modelway.server")


class ServerSettings(msgspec.Struct, frozen=True, kw_only=True):
    max_body_bytes: int = 8 * 1024 * 1024
    # What the sidecar will hold of a provider's answer.
    answer_limits: AnswerLimits = msgspec.field(default_factory=AnswerLimits)
    backpressure: BackpressureSettings = msgspec.field(default_factory=BackpressureSettings)  # requests in flight
    # The forward proxy of provider calls, if any.
    egress: EgressSettings = msgspec.field(default_factory=EgressSettings)


HOLDER = web.AppKey("holder", RuntimeHolder)
PATH = web.AppKey("request_path", RequestPath)

OPENAI = OpenAIFrontend()
ANTHROPIC_ERRORS = AnthropicErrors()  # the Messages API's error shape, without its front end


async def openai_chat(request: web.Request) -> web.StreamResponse:
    return await request.app[PATH].chat(request, OPENAI)


def _responses(
    path: RequestPath, request: web.Request, frontend: type[ResponsesFrontend]
) -> Awaitable[web.StreamResponse]:
    # One front end per request: the response object echoes the request's parameters.
    return path.chat(request, frontend())


def _count_tokens(path: RequestPath, request: web.Request, counting: TokenCounting) -> Awaitable[web.StreamResponse]:
    return path.count_tokens(request, ANTHROPIC_ERRORS, counting)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


def _deferred(
    name: str,
    deferred: DeferredFrontend[T],
    serve: Callable[[RequestPath, web.Request, T], Awaitable[web.StreamResponse]],
    *,
    shape: ErrorShape,
    operation: str = "chat",
) -> Handler:
    """The handler of an endpoint whose front end its first request imports; then one attribute check."""

    async def handler(request: web.Request) -> web.StreamResponse:
        path = request.app[PATH]
        loaded = deferred.loaded
        if loaded is None:
            started = time.perf_counter()
            try:
                loaded = await deferred.load()
            except ApiError as error:  # could not be imported: a 503 in the API's shape, accounted for
                return path.rejected(shape, error, operation=operation, model="", stream=False, started=started)
        return await serve(path, request, loaded)

    handler.__name__ = handler.__qualname__ = name
    return handler


async def openai_embeddings(request: web.Request) -> web.StreamResponse:
    return await request.app[PATH].embeddings(request, OPENAI)


async def list_models(request: web.Request) -> web.Response:
    runtime = request.app[HOLDER].current
    return web.json_response(models_list(runtime.table.models if runtime else []))


_ENDPOINTS = {
    "/v1/chat/completions": "POST",
    "/v1/responses": "POST",
    "/v1/embeddings": "POST",
    "/v1/models": "GET",
    "/v1/messages": "POST",
    "/v1/messages/count_tokens": "POST",
    "/v1/feedback": "POST",
}


async def _unrouted(request: web.Request) -> web.Response:
    """Anything no endpoint takes gets a JSON error too (a route, not a middleware: free for
    the requests that do match)."""
    frontend: ErrorShape = ANTHROPIC_ERRORS if request.path.startswith("/v1/messages") else OPENAI
    allowed = _ENDPOINTS.get(request.path)
    if allowed is not None:
        error = ApiError(
            405,
            f"{clip(request.method)} is not allowed on {request.path}; use {allowed}",
            "invalid_request_error",
            "method_not_allowed",
            headers={"allow": allowed},
        )
    else:
        error = ApiError(
            404, f"no such endpoint: {clip(request.method)} {clip(request.path)}", "invalid_request_error", "not_found"
        )
    return error_response(frontend, error)


def _internal_error() -> ApiError:
    # Generic on purpose: exception text can hold the app's input or a provider's secrets.
    return ApiError(
        500, "the sidecar failed to handle this request; its log has the details", "api_error", "internal_error"
    )


def _guarded(handler: Handler) -> Handler:
    """The last resort: an exception no stage expected becomes a JSON 500 in the caller's API
    shape, logged with its traceback, instead of aiohttp's text/plain page. Wrapped at
    registration rather than as a middleware: a try block costs nothing until it catches,
    while a middleware is one more call per request."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except (web.HTTPException, ClientGone, ConnectionError):
            raise  # aiohttp's own answers, and clients that left: nothing to answer
        except Exception:
            log.exception("unexpected error answering %s %s", clip(request.method), clip(request.path))
            if request.writer is not None and request.writer.output_size > 0:
                raise  # an answer is already on its way; aiohttp closes the connection
            frontend: ErrorShape = ANTHROPIC_ERRORS if request.path.startswith("/v1/messages") else OPENAI
            return error_response(frontend, _internal_error())

    guarded.__name__ = guarded.__qualname__ = handler.__name__
    return guarded


class _JsonErrorHandler(web.RequestHandler):
    """aiohttp answers requests it cannot parse (bad request line or method, header too large,
    malformed chunked body) with text/plain; this answers them in the API's JSON shape. Only the
    error path differs: nothing runs per request."""

    __slots__ = ()

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises once an answer began
        detail = getattr(exc, "message", None) or message or ""
        first_line = str(detail).strip().splitlines()[0] if str(detail).strip() else ""
        if status >= 500:
            error = _internal_error()
        else:
            text = "the request is not valid HTTP" + (f": {clip(first_line)}" if first_line else "")
            error = ApiError(status, text, "invalid_request_error", "bad_http_request")
        path = getattr(request, "path", "") or ""
        frontend: ErrorShape = ANTHROPIC_ERRORS if path.startswith("/v1/messages") else OPENAI
        response = error_response(frontend, error)
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        # As web.Server.__call__, with the handler above.
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class SidecarRunner(web.AppRunner):
    """The app-facing port's runner: aiohttp's own HTTP-level errors come back as JSON too."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer  # a subclass that only overrides __call__; same instance state
        return server


def build_app(
    *,
    holder: RuntimeHolder,
    telemetry: Telemetry,
    settings: ServerSettings,
    audit: AuditLog | None = None,
    access_log: AccessLog | None = None,
    admission: Admission | None = None,
    experiments: ExperimentCounts | None = None,
) -> web.Application:
    # The body limit is enforced in proxy.request.parse with a proper error; aiohttp's own
    # limit sits just above it as a backstop.
    app = web.Application(client_max_size=settings.max_body_bytes + 1)
    app[HOLDER] = holder
    app[EXPERIMENTS] = experiments = experiments or ExperimentCounts()
    audit = audit or AuditLog()
    accounting = Accounting(telemetry=telemetry, audit=audit, access_log=access_log or AccessLog())
    backpressure = Backpressure(settings.backpressure, metrics=telemetry.metrics)
    telemetry.metrics.watch_in_flight(backpressure.backend.in_flight)
    attempts = Attempts(telemetry=telemetry, backpressure=backpressure)
    admission = admission or Admission(telemetry=telemetry, audit=audit)

    def tls_for(host: str, port: int) -> ssl.SSLContext | None:  # a provider's own CA bundle, if it has one
        runtime = holder.current
        return runtime.tls_contexts.get((host, port)) if runtime is not None else None

    async def provider_client(app: web.Application) -> Any:
        client = HttpClient(limits=settings.answer_limits, egress=settings.egress, tls_for=tls_for)
        app[PATH] = RequestPath(
            holder=holder,
            telemetry=telemetry,
            max_body_bytes=settings.max_body_bytes,
            relay=Relay(client=client, telemetry=telemetry),
            attempts=attempts,
            admission=admission,
            accounting=accounting,
            backpressure=backpressure,
            experiments=experiments,
            guard=Guard(client=client, telemetry=telemetry, audit=audit),
        )
        yield
        await admission.close()  # the last settlements, then the counter store's connections
        await client.close()

    app.cleanup_ctx.append(provider_client)
    # The front ends most apps never call, each imported by its endpoint's first request (per app: the
    # import under way belongs to the app's event loop).
    anthropic: DeferredFrontend[AnthropicFrontend] = DeferredFrontend(
        what="the Anthropic Messages front end",
        module="proxy.frontends.anthropic_messages",
        build=lambda module: module.AnthropicFrontend(),
    )
    responses: DeferredFrontend[type[ResponsesFrontend]] = DeferredFrontend(
        what="the OpenAI Responses front end",
        module="proxy.frontends.openai_responses",
        build=lambda module: module.ResponsesFrontend,
    )
    counting: DeferredFrontend[TokenCounting] = DeferredFrontend(
        what="the count_tokens endpoint",
        module="proxy.request.count_tokens",
        build=lambda module: module.TokenCounting(),
    )
    messages = _deferred("anthropic_messages", anthropic, RequestPath.chat, shape=ANTHROPIC_ERRORS)
    count = _deferred(
        "anthropic_count_tokens", counting, _count_tokens, shape=ANTHROPIC_ERRORS, operation="count_tokens"
    )
    responding = _deferred("openai_responses", responses, _responses, shape=OPENAI)
    app.router.add_post("/v1/chat/completions", _guarded(openai_chat))
    app.router.add_post("/v1/responses", _guarded(responding))
    app.router.add_post("/v1/embeddings", _guarded(openai_embeddings))
    app.router.add_get("/v1/models", _guarded(list_models))
    app.router.add_post("/v1/messages", _guarded(messages))
    app.router.add_post("/v1/messages/count_tokens", _guarded(count))
    app.router.add_post("/v1/feedback", _guarded(feedback))
    app.on_response_prepare.append(add_request_id)
    app.router.add_route("*", "/{tail:.*}", _guarded(_unrouted))  # last: only what nothing above took
    return app
