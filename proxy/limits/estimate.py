"""What a request reserves before the call: tokens it may use and what they may cost.

Input tokens are estimated from the prompt's size in bytes at `BYTES_PER_TOKEN` = 2. Tokenizers
of the common models average about 4 bytes a token on English text, 2-3 on code and most other
languages written in Latin script, and about 1.5-3 on Chinese, Japanese and Korean (3 bytes a
character in UTF-8, one or two characters a token); 2 over-counts most prompts and rarely
under-counts, so a reservation usually covers the real usage and settlement returns the rest.
The bytes counted are the JSON body's: field names and punctuation add to the over-count.

Output tokens are what the request asks for at most (`max_tokens`, `max_completion_tokens`,
`max_output_tokens`, Gemini's `generationConfig.maxOutputTokens`), else the model's output limit
when the snapshot knows it, else `DEFAULT_OUTPUT_TOKENS`: a request that asks for no bound may
still stop early, and settlement returns what it did not use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from proxy.snapshot import ModelPricing

if TYPE_CHECKING:
    from proxy.limits.model import Demand

BYTES_PER_TOKEN = 2
DEFAULT_OUTPUT_TOKENS = 4096
_OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def requested_output_tokens(body: Mapping[str, Any]) -> int | None:
    """The output bound the request sets, in any of the inbound APIs' spellings; None if it sets none."""
    for name in _OUTPUT_FIELDS:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    config = body.get("generationConfig")
    if isinstance(config, Mapping):
        value = config.get("maxOutputTokens")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def input_tokens(prompt_bytes: int) -> int:
    return -(-max(prompt_bytes, 0) // BYTES_PER_TOKEN)


def estimate(
    *,
    prompt_bytes: int,
    requested_output: int | None,
    output_limit: int | None = None,
    pricing: ModelPricing | None = None,
) -> Demand:
    """The reservation for one request to one backend; `pricing` is the provider's for that model."""
    from proxy.limits.model import Demand  # loaded with the snapshot's limits (proxy.limits.binding): a lookup

    output = requested_output or output_limit or DEFAULT_OUTPUT_TOKENS
    if requested_output is not None and output_limit is not None:
        output = min(requested_output, output_limit)  # the model stops there anyway
    return Demand(
        input_tokens=input_tokens(prompt_bytes),
        output_tokens=output,
        input_micro_usd_per_token=pricing.input_per_million if pricing else 0.0,
        output_micro_usd_per_token=pricing.output_per_million if pricing else 0.0,
    )
