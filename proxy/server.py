"""The sidecar's HTTP front door: OpenAI- and Anthropic-compatible endpoints.

A handler parses the inbound API into the internal form, asks routing for a
plan on the runtime current at that moment, and hands the call to the relay.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from proxy.errors import ApiError, bad_request, clip, echo
from proxy.frontends.anthropic_messages import AnthropicFrontend
from proxy.frontends.base import Frontend
from proxy.frontends.openai_chat import OpenAIFrontend, error_for_unknown_model, models_list
from proxy.http_client import AnswerLimits, HttpClient
from proxy.json_limits import MAX_DEPTH, is_depth_error, too_deep
from proxy.policy.audit import AuditLog
from proxy.policy.classify import Classification, chat_texts, embedding_texts
from proxy.relay import ClientGone, Relay
from proxy.routing.table import NoMatchingRule, Plan, PolicyRefusal
from proxy.runtime import Runtime, RuntimeHolder
from proxy.snapshot import DATA_CLASS_HEADER
from proxy.telemetry import Telemetry, set_error

log = logging.getLogger("modelway.server")


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    max_body_bytes: int = 8 * 1024 * 1024
    answer_limits: AnswerLimits = field(
        default_factory=AnswerLimits
    )  # what the sidecar will hold of a provider's answer


HOLDER = web.AppKey("holder", RuntimeHolder)
RELAY = web.AppKey("relay", Relay)
TELEMETRY = web.AppKey("telemetry", Telemetry)
SETTINGS = web.AppKey("settings", ServerSettings)
AUDIT = web.AppKey("audit", AuditLog)

OPENAI = OpenAIFrontend()
ANTHROPIC = AnthropicFrontend()


def _json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers, content_type="application/json")


def _error_response(frontend: Frontend, error: ApiError) -> web.Response:
    return _json_response(frontend.error_body(error), status=error.status, headers=error.headers)


async def _read_json(request: web.Request) -> Any:
    content_type = request.content_type
    if content_type != "application/json":
        raise ApiError(
            415,
            f"Content-Type must be application/json, got {echo(content_type) if content_type else '(none)'}",
            "invalid_request_error",
            "unsupported_media_type",
        )
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(limit) from None
    except web.RequestPayloadError as exc:  # e.g. Content-Encoding: gzip on a body that is not gzip
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = clip(lines[-1]) if lines else "malformed"
        raise bad_request(f"request body could not be read: {reason}", code="bad_body_encoding") from None
    try:
        body = orjson.loads(raw)  # ~3x faster than json.loads on every request
    except ValueError as exc:
        if is_depth_error(exc):
            raise _too_deep() from None
        raise bad_request(f"request body is not valid JSON: {clip(str(exc))}") from None
    if too_deep(raw, body):
        raise _too_deep()
    return body


def _too_deep() -> ApiError:
    return bad_request(f"request body nests JSON more than {MAX_DEPTH} levels deep", code="json_too_deep")


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"request body is larger than the sidecar's limit of {limit} bytes",
        "invalid_request_error",
        "request_too_large",
    )


def _runtime(request: web.Request) -> Runtime:
    runtime = request.app[HOLDER].current
    if runtime is None:
        raise ApiError(503, "the sidecar has no configuration yet; retry shortly", "api_error", "not_ready")
    return runtime


def _plan(runtime: Runtime, request: web.Request, model: str, classification: Classification) -> Plan:
    """Raises PolicyRefusal when the workload's policy leaves this request nothing."""
    health = request.app[RELAY].health
    try:
        plan = runtime.table.plan(
            model,
            request.headers,
            draw=random.random,
            healthy=health.healthy if health.any_ejected else None,
            data_class=classification.data_class,
        )
    except NoMatchingRule as exc:
        raise ApiError(404, str(exc), "invalid_request_error", "no_matching_rule", "model") from None
    if plan is None:
        raise error_for_unknown_model(model, runtime.table.models)
    return plan


def _trace_id(span: Any) -> str:
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.trace_id else ""


def _classify(request: web.Request, runtime: Runtime, texts: Callable[[], Iterable[str]]) -> Classification:
    classification = runtime.classifier.classify(header=request.headers.get(DATA_CLASS_HEADER), texts=texts)
    if classification.found:
        request.app[TELEMETRY].metrics.personal_data(classification.found)
    return classification


def _audit_reroute(
    request: web.Request, *, runtime: Runtime, model: str, plan: Plan, classification: Classification, span: Any
) -> None:
    reason = f"removed {plan.removed_why}"
    if classification.raised_because:
        reason = f"class raised: {classification.raised_because}; {reason}"
    policies = plan.removed_policies
    request.app[AUDIT].record(
        workload=runtime.snapshot.policy.workload,
        model=model,
        route=plan.route.name,
        data_class=classification.data_class,
        decision="reroute",
        policies=policies,
        reason=reason,
        trace_id=_trace_id(span),
    )
    for policy in policies:
        request.app[TELEMETRY].metrics.policy_reroute(
            route=plan.route.name, policy=policy, data_class=classification.data_class
        )


def _refuse(
    request: web.Request,
    frontend: Frontend,
    *,
    operation: str,
    model: str,
    runtime: Runtime,
    classification: Classification,
    refusal: PolicyRefusal,
) -> web.Response:
    """403 naming the policy; the refusal gets its server span and an audit line like any decision."""
    telemetry = request.app[TELEMETRY]
    reason = str(refusal)
    if classification.raised_because:
        reason = f"{reason} (class raised: {classification.raised_because})"
    error = ApiError(403, reason, "permission_error", "policy_denied", "model")
    with telemetry.server_span(
        name=f"{operation} {model}",
        parent=telemetry.extract(request.headers),
        attributes={
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": model,
            "modelway.data_class": classification.data_class,
            "modelway.policy.decision": "refuse",
            "modelway.route": refusal.route,
            "modelway.policy": ", ".join(refusal.policies),
        },
    ) as span:
        set_error(span, "policy_denied", reason)
        request.app[AUDIT].record(
            workload=runtime.snapshot.policy.workload,
            model=model,
            route=refusal.route,
            data_class=classification.data_class,
            decision="refuse",
            policies=refusal.policies,
            reason=reason,
            trace_id=_trace_id(span),
        )
    for policy in refusal.policies:
        telemetry.metrics.policy_refusal(route=refusal.route, policy=policy, data_class=classification.data_class)
    return _error_response(frontend, error)


async def _traced(
    request: web.Request,
    frontend: Frontend,
    *,
    operation: str,
    model: str,
    runtime: Runtime,
    plan: Plan,
    classification: Classification,
    call: Callable[[Any], Awaitable[tuple[web.StreamResponse, Any]]],
) -> web.StreamResponse:
    """Runs one relayed call under its server span; errors come back in the caller's API shape."""
    telemetry = request.app[TELEMETRY]
    started = time.perf_counter()
    name, attributes = telemetry.request_span(
        operation=operation,
        model=model,
        route=plan.route.name,
        rule=plan.rule.name,
        data_class=classification.data_class,
        decision="reroute" if plan.removed else "allow",
    )
    with telemetry.server_span(name=name, parent=telemetry.extract(request.headers), attributes=attributes) as span:
        if plan.removed:
            _audit_reroute(request, runtime=runtime, model=model, plan=plan, classification=classification, span=span)
        try:
            response, outcome = await call(span)
        except ApiError as error:
            set_error(span, error.code or error.type, error.message)
            telemetry.finish_request(
                span,
                runtime=runtime,
                operation=operation,
                route=plan.route.name,
                outcome=None,
                error_type=error.code or error.type,
                started=started,
            )
            return _error_response(frontend, error)
        except (ClientGone, ConnectionError):
            log.info("client disconnected: model=%s", model)
            span.set_attribute("error.type", "client_disconnected")
            telemetry.finish_request(
                span,
                runtime=runtime,
                operation=operation,
                route=plan.route.name,
                outcome=None,
                error_type="client_disconnected",
                started=started,
            )
            raise
        telemetry.finish_request(
            span,
            runtime=runtime,
            operation=operation,
            route=plan.route.name,
            outcome=outcome,
            error_type=outcome.error_type,
            started=started,
        )
        return response


async def _chat(request: web.Request, frontend: Frontend) -> web.StreamResponse:
    try:
        parsed = frontend.parse_chat(await _read_json(request))
        runtime = _runtime(request)
        classification = _classify(request, runtime, lambda: chat_texts(parsed.request))
        plan = _plan(runtime, request, parsed.model, classification)
    except ApiError as error:
        return _error_response(frontend, error)
    except PolicyRefusal as refusal:
        return _refuse(
            request,
            frontend,
            operation="chat",
            model=parsed.model,
            runtime=runtime,
            classification=classification,
            refusal=refusal,
        )
    relay = request.app[RELAY]

    async def call(span: Any) -> tuple[web.StreamResponse, Any]:
        request.app[TELEMETRY].capture(span, runtime=runtime, request=parsed.request)  # opt-in prompt text
        if parsed.stream:
            # with content capture on, a front end whose stream encoder also collects the answer
            capturing = request.app[TELEMETRY].capturing(frontend, span, runtime=runtime, request=parsed.request)
            return await relay.stream_chat(
                request=request, runtime=runtime, plan=plan, parsed=parsed, frontend=capturing, server_span=span
            )
        data, outcome = await relay.unary(
            runtime=runtime,
            plan=plan,
            model=parsed.model,
            server_span=span,
            operation="chat",
            build=lambda t, m: t.chat_request(parsed.request, model=m, stream=False),
            parse=lambda t, body, m: t.chat_response(body),
        )
        request.app[TELEMETRY].capture(span, runtime=runtime, request=parsed.request, response=data)
        if frontend is OPENAI and outcome.native_openai:
            return web.Response(body=outcome.raw, content_type="application/json"), outcome
        return _json_response(frontend.render_chat(data)), outcome

    return await _traced(
        request,
        frontend,
        operation="chat",
        model=parsed.model,
        runtime=runtime,
        plan=plan,
        classification=classification,
        call=call,
    )


async def openai_chat(request: web.Request) -> web.StreamResponse:
    return await _chat(request, OPENAI)


async def anthropic_messages(request: web.Request) -> web.StreamResponse:
    return await _chat(request, ANTHROPIC)


async def openai_embeddings(request: web.Request) -> web.StreamResponse:
    try:
        model, body = OPENAI.parse_embeddings(await _read_json(request))
        runtime = _runtime(request)
        classification = _classify(request, runtime, lambda: embedding_texts(body))
        plan = _plan(runtime, request, model, classification)
    except ApiError as error:
        return _error_response(OPENAI, error)
    except PolicyRefusal as refusal:
        return _refuse(
            request,
            OPENAI,
            operation="embeddings",
            model=model,
            runtime=runtime,
            classification=classification,
            refusal=refusal,
        )

    async def call(span: Any) -> tuple[web.StreamResponse, Any]:
        data, outcome = await request.app[RELAY].unary(
            runtime=runtime,
            plan=plan,
            model=model,
            server_span=span,
            operation="embeddings",
            build=lambda t, m: t.embeddings_request(body, model=m),
            parse=lambda t, raw, m: t.embeddings_response(raw, model=m),
        )
        encoding = body.get("encoding_format", "float")
        return _json_response(OPENAI.render_embeddings(data, encoding_format=encoding)), outcome

    return await _traced(
        request,
        OPENAI,
        operation="embeddings",
        model=model,
        runtime=runtime,
        plan=plan,
        classification=classification,
        call=call,
    )


async def list_models(request: web.Request) -> web.Response:
    runtime = request.app[HOLDER].current
    return web.json_response(models_list(runtime.table.models if runtime else []))


_ENDPOINTS = {"/v1/chat/completions": "POST", "/v1/embeddings": "POST", "/v1/models": "GET", "/v1/messages": "POST"}


async def _unrouted(request: web.Request) -> web.Response:
    """Anything no endpoint takes gets a JSON error too (a route, not a middleware: free for
    the requests that do match)."""
    frontend: Frontend = ANTHROPIC if request.path.startswith("/v1/messages") else OPENAI
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
    return _error_response(frontend, error)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
            frontend: Frontend = ANTHROPIC if request.path.startswith("/v1/messages") else OPENAI
            return _error_response(frontend, _internal_error())

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
        frontend: Frontend = ANTHROPIC if path.startswith("/v1/messages") else OPENAI
        response = _error_response(frontend, error)
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
    *, holder: RuntimeHolder, telemetry: Telemetry, settings: ServerSettings, audit: AuditLog | None = None
) -> web.Application:
    # The body limit is enforced in _read_json with a proper error; aiohttp's own
    # limit sits just above it as a backstop.
    app = web.Application(client_max_size=settings.max_body_bytes + 1)
    app[HOLDER] = holder
    app[TELEMETRY] = telemetry
    app[SETTINGS] = settings
    app[AUDIT] = audit or AuditLog()

    async def provider_client(app: web.Application) -> Any:
        client = HttpClient(limits=settings.answer_limits)
        app[RELAY] = Relay(client=client, telemetry=telemetry)
        yield
        await client.close()

    app.cleanup_ctx.append(provider_client)
    app.router.add_post("/v1/chat/completions", _guarded(openai_chat))
    app.router.add_post("/v1/embeddings", _guarded(openai_embeddings))
    app.router.add_get("/v1/models", _guarded(list_models))
    app.router.add_post("/v1/messages", _guarded(anthropic_messages))
    app.router.add_route("*", "/{tail:.*}", _guarded(_unrouted))  # last: only what nothing above took
    return app
