"""One request, top to bottom: parse -> classify -> plan -> admit -> attempt -> account.

    parse     proxy.request.parse      the body, read under limits, into the internal form
    classify  proxy.request.classify   the data class (the workload's floor, the app's header, a scan)
    plan      proxy.request.plan       route, rule, and the backends to try in order
    guard     proxy.request.guard      the route's guardrails on the request (chat), then on its answer
    admit     proxy.request.admit      limits, budgets, providers' capacity: a Gate the attempts ask per backend;
                                       the route's in-flight bound (proxy.request.backpressure), held to the end
    attempt   proxy.request.attempt    retries, fallbacks, health; proxy.request.relay makes each call;
                                       proxy.request.passthrough sends a backend of the app's own API
                                       the app's body, and the app its answer, as they are;
                                       proxy.request.redact masks what a backend may not see, and
                                       puts the values back in its answer
    account   proxy.request.account    the one Outcome, read by spans, metrics, audit and access logs

A request turned away at any stage is still accounted for (and answered in its API's error
shape); from the plan on it runs under its server span.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web
from opentelemetry.trace import Span

from proxy.errors import ApiError
from proxy.experiments import REQUEST_ID_KEY, ExperimentCounts
from proxy.frontends.base import ErrorShape, Frontend
from proxy.frontends.openai_chat import OpenAIFrontend
from proxy.policy.classify import Classification, embedding_texts
from proxy.providers.base import Translator, UpstreamRequest
from proxy.request.account import Accounting
from proxy.request.admit import Admission
from proxy.request.attempt import Attempts, Call
from proxy.request.backpressure import Backpressure
from proxy.request.classify import classify
from proxy.request.guard import Guard
from proxy.request.outcome import CLIENT_CLOSED, CLIENT_DISCONNECTED, Attempt
from proxy.request.parse import parse_chat, parse_embeddings, read_json
from proxy.request.passthrough import Passthrough, sendable_texts
from proxy.request.plan import body_bytes, plan, request_size
from proxy.request.redact import masking_for
from proxy.request.relay import Answer, ClientGone, ParseBody, Relay
from proxy.request.responses import error_response, json_response
from proxy.routing.table import Plan, PolicyRefusal
from proxy.runtime import Runtime, RuntimeHolder
from proxy.snapshot import Backend
from proxy.telemetry import Telemetry

if TYPE_CHECKING:
    from proxy.request.count_tokens import TokenCounting  # loaded by the first count (proxy.server)
    from proxy.request.gate import Gate  # loaded with the snapshots that have limits (proxy.runtime)

log = logging.getLogger("modelway.server")

# What an operation does once planned: (runtime, plan, server span, attempts made, the request's
# limits or None) -> the answer.
Serve = Callable[[Runtime, Plan, Span, list[Attempt], "Gate | None"], Awaitable[tuple[web.StreamResponse, Answer]]]


class RequestPath:
    """The stages wired together, once per sidecar (`proxy.server.build_app`)."""

    def __init__(
        self,
        *,
        holder: RuntimeHolder,
        telemetry: Telemetry,
        max_body_bytes: int,
        relay: Relay,
        attempts: Attempts,
        admission: Admission,
        accounting: Accounting,
        backpressure: Backpressure,
        experiments: ExperimentCounts | None = None,
        guard: Guard | None = None,
    ) -> None:
        self._holder = holder
        self._telemetry = telemetry
        self._max_body_bytes = max_body_bytes
        self._relay = relay
        self._attempts = attempts
        self._admission = admission
        self._accounting = accounting
        self._backpressure = backpressure
        self._experiments = experiments
        self._guard = guard

    async def chat(self, request: web.Request, frontend: Frontend) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            parsed = await parse_chat(request, frontend, max_body_bytes=self._max_body_bytes)  # 1 parse
        except ApiError as error:
            return self.rejected(frontend, error, operation="chat", model="", stream=False, started=started)
        telemetry, relay, attempts, guard = self._telemetry, self._relay, self._attempts, self._guard

        async def serve(
            runtime: Runtime, plan: Plan, span: Span, made: list[Attempt], gate: Gate | None
        ) -> tuple[web.StreamResponse, Answer]:
            checked = parsed.request  # as the guardrails let it on (replaced texts)
            if guard is not None:
                checked = await guard.request(
                    runtime=runtime, plan=plan, span=span, model=parsed.model, request=checked
                )
            masking = masking_for(runtime, plan)  # what each backend may be sent
            # the app's own body to a backend of its API (nothing lost), else the translated one
            # Not when a guardrail replaced texts (the app's body still holds them), nor when guardrails
            # read the answer (one may replace its text, which the provider's own bytes would still show).
            passing = Passthrough(
                frontend=frontend,
                parsed=parsed,
                headers=request.headers,
                masking=masking,
                enabled=checked is parsed.request
                and not runtime.guardrails.pick(plan.route.name, plan.data_class, "response"),
            )
            if (refused := passing.refusal(plan, runtime.translators)) is not None:
                raise refused  # a Responses request only the provider can serve, and no backend would
            # What content capture records: masked when any backend of the plan masks it.
            captured = masking.for_capture(plan, checked) if telemetry.capture_content else checked
            telemetry.capture(span, runtime=runtime, request=captured)  # opt-in prompt text
            if parsed.stream:

                def stream(
                    translator: Translator,
                    backend: Backend,
                    upstream: UpstreamRequest,
                    attempt_span: Span,
                    deadline: float,
                ) -> Awaitable[Answer]:
                    translator, front = passing.for_stream(translator, frontend, backend)
                    return relay.stream(
                        request=request,
                        parsed=parsed,
                        # with content capture on, a front end whose stream encoder also collects the
                        # answer (as the provider sent it: outside the restoring of the values)
                        frontend=telemetry.capturing(masking.frontend(front), span, runtime=runtime, request=captured),
                        translator=translator,
                        backend=backend,
                        upstream=upstream,
                        span=attempt_span,
                        deadline=deadline,
                        timeouts=plan.rule.timeouts,
                        started=started,
                        scrub=runtime.scrubber,
                        headers=gate.answer_headers() if gate is not None else None,
                        guard=guard.stream(runtime=runtime, plan=plan, span=span, model=parsed.model)
                        if guard
                        else None,
                    )

                answer = await attempts.run(
                    runtime=runtime,
                    plan=plan,
                    model=parsed.model,
                    operation="chat",
                    server_span=span,
                    build=passing.build(
                        lambda t, b: t.chat_request(masking.request_for(b.key, checked), model=b.model, stream=True),
                        stream=True,
                    ),
                    call=stream,
                    made=made,
                    gate=gate,
                )
                assert answer.response is not None  # (a stream that answered has begun)
                answer.redacted, answer.redacted_by = masking.counts, masking.policies
                return answer.response, answer
            answer = await attempts.run(
                runtime=runtime,
                plan=plan,
                model=parsed.model,
                operation="chat",
                server_span=span,
                build=passing.build(
                    lambda t, b: t.chat_request(masking.request_for(b.key, checked), model=b.model, stream=False),
                    stream=False,
                ),
                call=self._unary(plan, passing.parse(lambda t, body, m: t.chat_response(body))),
                made=made,
                gate=gate,
            )
            if guard is not None:  # the answer's guardrails, before the app gets it
                refused = await guard.answered(runtime=runtime, plan=plan, span=span, model=parsed.model, answer=answer)
                if refused is not None:
                    return error_response(frontend, refused), answer
            telemetry.capture(span, runtime=runtime, request=captured, response=answer.data)
            answer.redacted, answer.redacted_by = masking.counts, masking.policies
            headers = gate.answer_headers() if gate is not None else None  # the rate-limit headers
            if masking.restores:  # the values back; the provider's bytes hold the placeholders
                return json_response(frontend.render_chat(masking.restore(answer.data)), headers=headers), answer
            if passing.sent_as_is(answer.backend) or (frontend.api == "openai" and answer.native_openai):
                # the provider's bytes are the answer
                return web.Response(body=answer.raw, content_type="application/json", headers=headers), answer
            return json_response(frontend.render_chat(answer.data), headers=headers), answer

        return await self._serve(
            request,
            frontend,
            operation="chat",
            model=parsed.model,
            stream=parsed.stream,
            texts=lambda: sendable_texts(parsed),
            serve=serve,
            started=started,
            body=parsed.request,
        )

    async def embeddings(self, request: web.Request, frontend: OpenAIFrontend) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            model, body = await parse_embeddings(request, frontend, max_body_bytes=self._max_body_bytes)  # 1 parse
        except ApiError as error:
            return self.rejected(frontend, error, operation="embeddings", model="", stream=False, started=started)

        async def serve(
            runtime: Runtime, plan: Plan, span: Span, made: list[Attempt], gate: Gate | None
        ) -> tuple[web.StreamResponse, Answer]:
            masking = masking_for(runtime, plan)
            answer = await self._attempts.run(
                runtime=runtime,
                plan=plan,
                model=model,
                operation="embeddings",
                server_span=span,
                build=lambda t, b: t.embeddings_request(masking.embeddings_for(b.key, body), model=b.model),
                call=self._unary(plan, lambda t, raw, m: t.embeddings_response(raw, model=m)),
                made=made,
                gate=gate,
            )
            answer.redacted, answer.redacted_by = masking.counts, masking.policies
            encoding = body.get("encoding_format", "float")
            headers = gate.answer_headers() if gate is not None else None
            rendered = frontend.render_embeddings(answer.data, encoding_format=encoding)
            return json_response(rendered, headers=headers), answer

        return await self._serve(
            request,
            frontend,
            operation="embeddings",
            model=model,
            stream=False,
            texts=lambda: embedding_texts(body),
            serve=serve,
            started=started,
            body=body,
        )

    async def count_tokens(
        self, request: web.Request, shape: ErrorShape, counting: TokenCounting
    ) -> web.StreamResponse:
        """Anthropic's count_tokens, counted by the backend that would serve the call (`counting`:
        proxy.request.count_tokens; its errors in `shape`, the Messages API's)."""
        started = time.perf_counter()
        operation = counting.operation
        try:
            parsed = counting.parse(await read_json(request, max_body_bytes=self._max_body_bytes))  # 1 parse
        except ApiError as error:
            return self.rejected(shape, error, operation=operation, model="", stream=False, started=started)
        return await self._serve(
            request,
            shape,
            operation=operation,
            model=parsed.model,
            stream=False,
            texts=lambda: sendable_texts(parsed),
            serve=counting.serve(parsed, attempts=self._attempts, unary=self._unary),
            started=started,
            body=parsed.request,
            fit=False,  # a count is an answer whatever the prompt's size
        )

    # --- the stages after parse, the same for every operation ------------------------------

    async def _serve(
        self,
        request: web.Request,
        frontend: ErrorShape,
        *,
        operation: str,
        model: str,
        stream: bool,
        texts: Callable[[], Iterable[str]],
        serve: Serve,
        started: float,
        body: Mapping[str, Any],
        fit: bool = True,
    ) -> web.StreamResponse:
        runtime: Runtime | None = None  # the snapshot this request is served by, to its end
        classification: Classification | None = None
        chosen: Plan | None = None
        try:
            runtime = self._runtime()
            classification = classify(runtime, request.headers, texts)  # 2 classify
            measured = size = None  # the request's size, read once, only when some rule or window needs it
            if runtime.table.needs_size:
                measured = body_bytes(request, body)
                size = request_size(body, body_bytes=measured)
            try:
                chosen = plan(  # 3 plan
                    runtime,
                    request.headers,
                    model=model,
                    data_class=classification.data_class,
                    health=self._attempts.health,
                    size=size,
                    fit=fit,
                )
            except PolicyRefusal as refusal:
                return self._refuse(
                    request,
                    frontend,
                    refusal,
                    operation=operation,
                    model=model,
                    stream=stream,
                    runtime=runtime,
                    classification=classification,
                    started=started,
                )
            gate = self._admission.admit(  # 4 admit (None: no limit binds this request)
                runtime=runtime,
                plan=chosen,
                classification=classification,
                operation=operation,
                model=model,
                api=frontend.api,
                body=body,
                request=request,
                body_bytes=measured,
            )
        except ApiError as error:
            self._accounting.rejected(
                error,
                operation=operation,
                model=model,
                stream=stream,
                runtime=runtime,
                classification=classification,
                plan=chosen,
                started=started,
            )
            return error_response(frontend, error)

        telemetry = self._telemetry
        name, attributes = telemetry.request_span(
            operation=operation,
            model=model,
            route=chosen.route.name,
            rule=chosen.rule.name,
            data_class=classification.data_class,
            decision="reroute" if chosen.removed else "allow",
        )
        made: list[Attempt] = []
        bounds, route_slot = self._backpressure, None  # the route's in-flight slot, held to the end
        request_id = None
        if chosen.experiment is not None:  # the id apps send feedback with, in the answer's x-request-id
            request[REQUEST_ID_KEY] = request_id = ExperimentCounts.new_request_id()
        with telemetry.server_span(name=name, parent=telemetry.extract(request.headers), attributes=attributes) as span:
            if chosen.experiment is not None:
                span.set_attributes({"modelway.experiment": chosen.experiment, "modelway.arm": chosen.arm or ""})

            def settle(answer: Answer | None, status: int, error_type: str | None, message: str) -> None:
                outcome = self._accounting.settled(
                    span,
                    operation=operation,
                    model=model,
                    stream=stream,
                    runtime=runtime,
                    classification=classification,
                    plan=chosen,
                    answer=answer,
                    attempts=made,
                    status=status,
                    error_type=error_type,
                    error_message=message,
                    started=started,
                    gate=gate,
                )
                if chosen.experiment is None or chosen.arm is None:
                    return
                if self._experiments is not None:
                    self._experiments.count(
                        chosen.experiment,
                        chosen.arm,
                        status=status,
                        duration=outcome.duration,
                        ttft=outcome.ttft,
                        cost=outcome.cost,
                        request_id=request_id,
                    )
                telemetry.metrics.experiment(
                    experiment=chosen.experiment,
                    arm=chosen.arm,
                    error_type=outcome.error_type,
                    seconds=outcome.duration,
                    cost=outcome.cost,
                    ttft=outcome.ttft,
                )

            try:
                route_slot = bounds.route.enter(chosen.route.name) or await bounds.wait_route(chosen.route.name)
                response, answer = await serve(runtime, chosen, span, made, gate)  # 5 attempt
            except ApiError as error:
                settle(None, error.status, error.code or error.type, error.message)
                return error_response(frontend, error)
            except (ClientGone, ConnectionError, asyncio.CancelledError):
                log.info("client disconnected: model=%s", model)
                settle(None, CLIENT_CLOSED, CLIENT_DISCONNECTED, "the client closed the connection")
                raise
            except Exception:  # a bug: proxy.server answers a JSON 500 and logs the traceback
                settle(None, 500, "internal_error", "the sidecar failed to handle this request")
                raise
            finally:
                if route_slot is not None:
                    bounds.route.leave(route_slot)
            settle(answer, response.status, answer.error_type, answer.error_message)  # 6 account
            return response

    def _runtime(self) -> Runtime:
        runtime = self._holder.current
        if runtime is None:
            raise ApiError(503, "the sidecar has no configuration yet; retry shortly", "api_error", "not_ready")
        return runtime

    def _unary(self, plan: Plan, parse: ParseBody) -> Call:
        relay, connect = self._relay, plan.rule.timeouts.connect_seconds

        def call(
            translator: Translator, backend: Backend, upstream: UpstreamRequest, span: Span, deadline: float
        ) -> Awaitable[Answer]:
            return relay.unary(
                translator=translator,
                backend=backend,
                upstream=upstream,
                span=span,
                deadline=deadline,
                connect_seconds=connect,
                parse=parse,
            )

        return call

    def rejected(
        self, frontend: ErrorShape, error: ApiError, *, operation: str, model: str, stream: bool, started: float
    ) -> web.Response:
        """A request turned away before its plan (its body, or its API's front end), accounted for."""
        self._accounting.rejected(
            error, operation=operation, model=model, stream=stream, runtime=None, classification=None, started=started
        )
        return error_response(frontend, error)

    def _refuse(
        self,
        request: web.Request,
        frontend: ErrorShape,
        refusal: PolicyRefusal,
        *,
        operation: str,
        model: str,
        stream: bool,
        runtime: Runtime,
        classification: Classification,
        started: float,
    ) -> web.Response:
        """403 naming the policy; the refusal gets its server span and an audit line like any decision."""
        reason = str(refusal)
        if classification.raised_because:
            reason = f"{reason} (class raised: {classification.raised_because})"
        telemetry = self._telemetry
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
            self._accounting.refused(
                span,
                refusal,
                operation=operation,
                model=model,
                stream=stream,
                runtime=runtime,
                classification=classification,
                reason=reason,
                started=started,
            )
        return error_response(frontend, ApiError(403, reason, "permission_error", "policy_denied", "model"))
