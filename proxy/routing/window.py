"""Whether a request fits a model's context window, pure and cheap.

A request's input tokens are estimated once, from the size of its body in bytes at
`BYTES_PER_TOKEN` = 4 (what the common tokenizers average on English text): the body's
Content-Length, or the size of its JSON when the upload was chunked. The JSON's field names
and punctuation add a little; code and non-Latin scripts take more tokens than this says, so
a window declared a little below the real one leaves room. Limits estimate from the same
bytes at a more cautious rate (`proxy.limits.estimate`), since a reservation must cover the
real usage while a window that is skipped wrongly sends the request elsewhere.

A backend fits when the estimate plus the output it may produce (what the request asks for,
capped by the model's `maxOutputTokens`, else that cap, else nothing) is within its window.
"""

from __future__ import annotations

import msgspec

BYTES_PER_TOKEN = 4


def estimated_input_tokens(body_bytes: int) -> int:
    return -(-max(body_bytes, 0) // BYTES_PER_TOKEN)


class Window(msgspec.Struct, frozen=True):
    """One backend's model: its context window and output cap (tokens)."""

    context: int
    max_output: int | None = None

    def needed(self, input_tokens: int, requested_output: int | None) -> int:
        output = requested_output or self.max_output or 0
        if requested_output is not None and self.max_output is not None:
            output = min(requested_output, self.max_output)  # the model stops there anyway
        return input_tokens + output

    def fits(self, input_tokens: int, requested_output: int | None) -> bool:
        return self.needed(input_tokens, requested_output) <= self.context


class RequestSize(msgspec.Struct, frozen=True):
    """What the window checks and the `inputTokens` matches of one request read."""

    input_tokens: int
    requested_output: int | None = None


class ContextWindowExceeded(Exception):
    """No backend the plan could use has a window the request fits; the message names the estimate
    and the largest window."""

    def __init__(self, *, route: str, size: RequestSize, largest: int) -> None:
        output = f" plus {size.requested_output} output tokens requested" if size.requested_output else ""
        super().__init__(
            f"the request's estimated {size.input_tokens} input tokens{output} do not fit the context window "
            f"of any backend of route {route!r} (the largest is {largest} tokens); shorten the prompt"
        )
        self.route = route
        self.size = size
        self.largest = largest
