"""Stage 3, plan: which route and rule serve the request, and the backends to try in order.

The decision itself is pure and made on tables compiled per snapshot (`proxy.routing.table`):
header matches, the backends the workload's policy leaves for the data class, the weighted
pick (keeping backends that passive health checks ejected out of it, `proxy.routing.health`),
then the rule's fallbacks. When some rule matches on the request's size or some backend declares
its context window, the request's input tokens are estimated here, once, from its body's size
(`proxy.routing.window`); otherwise nothing is measured.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from proxy.errors import ApiError
from proxy.frontends.openai_chat import error_for_unknown_model
from proxy.limits.estimate import requested_output_tokens
from proxy.routing.health import OutlierDetector
from proxy.routing.table import NoMatchingRule, Plan
from proxy.routing.window import ContextWindowExceeded, RequestSize, estimated_input_tokens
from proxy.runtime import Runtime


def body_bytes(request: web.BaseRequest, body: Mapping[str, Any]) -> int:
    """The request body's size: its Content-Length, or for a chunked upload its JSON's size."""
    size = request.content_length
    return size if size is not None else len(orjson.dumps(body))


def request_size(body: Mapping[str, Any], *, body_bytes: int) -> RequestSize:
    return RequestSize(input_tokens=estimated_input_tokens(body_bytes), requested_output=requested_output_tokens(body))


def plan(
    runtime: Runtime,
    headers: Mapping[str, str],
    *,
    model: str,
    data_class: str,
    health: OutlierDetector,
    size: RequestSize | None = None,
    fit: bool = True,
) -> Plan:
    """Raises ApiError (404) when no route serves `model` or none of its rules matches, (400
    context_length_exceeded) when no backend's context window fits the request, and
    `proxy.routing.table.PolicyRefusal` when the workload's policy leaves this request nothing.
    `fit=False`: backends are not checked against their context windows (see RoutingTable.plan)."""
    try:
        chosen = runtime.table.plan(
            model,
            headers,
            draw=random.random,
            healthy=health.healthy if health.any_ejected else None,
            data_class=data_class,
            size=size,
            fit=fit,
        )
    except NoMatchingRule as exc:
        raise ApiError(404, str(exc), "invalid_request_error", "no_matching_rule", "model") from None
    except ContextWindowExceeded as exc:
        raise ApiError(400, str(exc), "invalid_request_error", "context_length_exceeded", "messages") from None
    if chosen is None:
        raise error_for_unknown_model(model, runtime.table.models)
    return chosen
