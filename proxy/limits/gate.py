"""The admit stage's decisions, pure: what a limiter's answer means for the request's next step, and
what a request is charged when its answer ends.

- `step`: admitted -> go; refused by providers' capacity alone -> skip to the next backend (quota-aware
  failover, before the provider could answer 429); refused only by budgets whose limits reroute -> the
  cheaper backends they name; anything else -> refuse (429, or 503 for a closed limit the store could
  not check).
- `settled_usage`: the backend that answered is charged what it reported, field by field (budgets: the
  cost its span reports, prompt-cache tokens at their own prices), and the reservation's estimate
  where it reported nothing (a cut stream, a provider without usage, a client that left mid-answer);
  a backend left for another one, or that failed, is charged nothing; a call the client abandoned
  before it answered is charged the estimate (the provider may have done the work).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from proxy.limits.estimate import estimate
from proxy.limits.model import MICRO_USD, Decision, Demand, Reservation, Usage, charged, round_up
from proxy.providers.base import Usage as AnswerUsage
from proxy.snapshot import ModelPricing

Step = Literal["go", "skip", "reroute", "refuse"]
# How a reservation's backend ended: it answered (its usage, the estimate where it said nothing), it
# failed or was left (nothing), or the client left while it was being called (the estimate).
Ending = Literal["answered", "failed", "abandoned"]

# A lease outlives the request's total timeout by this much: a crashed sidecar's leases free
# themselves, a live one always returns its lease before.
LEASE_MARGIN_SECONDS = 30.0
ZERO = Usage(0, 0)


def step(decision: Decision) -> Step:
    if decision.allowed:
        return "go"
    if decision.capacity_refused:
        return "skip"
    if decision.reroute_to:
        return "reroute"
    return "refuse"


def demand_for(
    *, prompt_bytes: int, requested_output: int | None, pricing: ModelPricing | None, embeddings: bool
) -> Demand:
    """What a request reserves on one backend; an embedding has no output tokens to reserve."""
    demand = estimate(prompt_bytes=prompt_bytes, requested_output=requested_output, pricing=pricing)
    if embeddings:
        return Demand(demand.input_tokens, 0, demand.input_micro_usd_per_token, demand.output_micro_usd_per_token)
    return demand


def settled_usage(demand: Demand, ending: Ending, usage: AnswerUsage | None = None, cost: float | None = None) -> Usage:
    """`cost` is the answer's USD as its span reports it (None: unpriced or no usage): a budget is
    charged that, plus the estimate's price of whatever the backend did not report."""
    if ending == "failed":
        return ZERO
    if ending == "abandoned" or usage is None:
        return Usage(demand.input_tokens, demand.output_tokens)
    micro_usd = None
    if cost is not None:
        unreported = Demand(
            0 if usage.input_tokens is not None else demand.input_tokens,
            0 if usage.output_tokens is not None else demand.output_tokens,
            demand.input_micro_usd_per_token,
            demand.output_micro_usd_per_token,
        )
        # (rounded to a millionth first: float noise must not add a micro-USD to an exact price)
        micro_usd = round_up(round(cost * MICRO_USD, 6)) + unreported.micro_usd()
    return Usage(
        demand.input_tokens if usage.input_tokens is None else usage.input_tokens,
        demand.output_tokens if usage.output_tokens is None else usage.output_tokens,
        micro_usd,
    )


def changes_anything(reservation: Reservation, usage: Usage) -> bool:
    """Whether settling with `usage` would change a counter: a lease to return, or a charge that differs
    from the reservation (a requests-per-minute limit's never does). If not, the store is not asked."""
    demand = reservation.demand
    for counter in reservation.counters:
        measure = counter.measure
        if measure == "concurrency":
            return True
        if charged(measure, demand, usage) != demand.cost(measure):
            return True
    return False


def lease_seconds(total_timeout: float) -> float:
    return total_timeout + LEASE_MARGIN_SECONDS


def soonest(decisions: Sequence[Decision]) -> Decision:
    """Of several refusals (every backend out of capacity), the one the app can retry soonest."""
    return min(decisions, key=lambda d: d.refusal.retry_after_seconds if d.refusal is not None else 0.0)
