"""The audit trail: one structured line per request the workload's policy (or one of its limits) refused
or rerouted, per request it masked, and per guardrail that denied, replaced or failed on a request.

A JSON object per line on the `modelway.audit` logger, so a log pipeline can
keep it apart from operational logs. It names the workload, route, data class,
policy, decision and reason; never prompt text, never credentials.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Literal

log = logging.getLogger("modelway.audit")

Decision = Literal["refuse", "reroute", "redact", "guardrail"]


class AuditLog:
    def __init__(self, *, pod: str = "") -> None:
        self._pod = pod  # from the downward API; the controller-verified identity is in the policy

    def record(
        self,
        *,
        workload: str,
        model: str,
        route: str,
        data_class: str,
        decision: Decision,
        policies: tuple[str, ...],
        reason: str,
        trace_id: str = "",
        limit: str = "",
        redacted: Mapping[str, int] | None = None,
        guardrail: Mapping[str, str] | None = None,
    ) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        entry: dict[str, object] = {
            "time": round(time.time(), 3),
            "audit": "modelway.policy",
            "workload": workload,
            "pod": self._pod,
            "model": model,
            "route": route,
            "data_class": data_class,
            "decision": decision,
            "policy": list(policies),
            "reason": reason,
        }
        if limit:  # a limit's refusal (or a spent budget's reroute): which one of the policy's limits
            entry["limit"] = limit
        if redacted:  # what was masked, by kind: counts, never values
            entry["redacted"] = dict(redacted)
        if guardrail:  # which guardrail, in which phase, and what it decided
            entry["guardrail"] = dict(guardrail)
        if trace_id:
            entry["trace_id"] = trace_id
        log.info("%s", json.dumps(entry, separators=(",", ":")))
