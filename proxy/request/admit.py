"""Stage 4, admit: whether the request may go out now (limits, budgets, backpressure).

Nothing is configured yet, so every request is admitted: `admit` is one method call that
allocates nothing. Limits plug in here (raising an ApiError, 429, to turn a request away);
what they charge afterwards they read from the outcome in the account stage.
"""

from __future__ import annotations

from proxy.policy.classify import Classification
from proxy.routing.table import Plan
from proxy.runtime import Runtime


class Admission:
    """Built once per sidecar (`proxy.server.build_app`)."""

    __slots__ = ()

    def admit(self, *, runtime: Runtime, plan: Plan, classification: Classification) -> None:
        """Returns when the request may go out; raises ApiError when it may not."""
        return None
