"""Stage 3, plan: which route and rule serve the request, and the backends to try in order.

The decision itself is pure and made on tables compiled per snapshot (`proxy.routing.table`):
header matches, the backends the workload's policy leaves for the data class, the weighted
pick (keeping backends that passive health checks ejected out of it, `proxy.routing.health`),
then the rule's fallbacks.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from proxy.errors import ApiError
from proxy.frontends.openai_chat import error_for_unknown_model
from proxy.routing.health import OutlierDetector
from proxy.routing.table import NoMatchingRule, Plan
from proxy.runtime import Runtime


def plan(runtime: Runtime, headers: Mapping[str, str], *, model: str, data_class: str, health: OutlierDetector) -> Plan:
    """Raises ApiError (404) when no route serves `model` or none of its rules matches, and
    `proxy.routing.table.PolicyRefusal` when the workload's policy leaves this request nothing."""
    try:
        chosen = runtime.table.plan(
            model,
            headers,
            draw=random.random,
            healthy=health.healthy if health.any_ejected else None,
            data_class=data_class,
        )
    except NoMatchingRule as exc:
        raise ApiError(404, str(exc), "invalid_request_error", "no_matching_rule", "model") from None
    if chosen is None:
        raise error_for_unknown_model(model, runtime.table.models)
    return chosen
