"""Reversible masking of personal data: send the request with placeholders, give the app its values back.

Pure (no I/O, no clock); nothing here is on the request path yet. The pieces:

- `rule.RedactionRule` — built once per snapshot from a policy's `redact`
  action: the built-in kinds to mask (the personal-data detector's own,
  `proxy.policy.personal_data`, whose `find` gives the spans its `scan`
  counts), named custom patterns compiled here once, and `restore`.
- `pseudonymize.Pseudonymizer` — one per request, holding the only copy of
  the placeholder <-> value mapping. `redact_chat(request)` returns the
  rewritten internal request (`<EMAIL_1>`, the same value the same
  placeholder), the counts per kind, and `unmasked`: what the rule would mask
  where a placeholder cannot go (URLs, binary payloads, encoded text, keys).
- `restore` — `StreamRestorer` (chunks in, chunks with the values back; a
  placeholder split anywhere across deltas is restored, only a possible
  placeholder's start is held), `RestoringEncoder` (wraps a front end's
  stream encoder), `restore_response` (whole answers). Tool-call arguments
  get JSON-escaped values.

## Where it plugs in (for the request path)

1. Policy, compiled (controller -> snapshot -> sidecar): a residency rule
   (`controller.api.ResidencyRule`: dataClass, jurisdictions, regions,
   hosting) says today that a provider outside it is denied for that class.
   Proposed: an optional `redact` on the rule, meaning "outside these places,
   mask instead of deny" (absent: deny, as now)::

       residency:
         - dataClass: personal
           jurisdictions: [eu]
           redact:                                     # instead of deny, for providers outside [eu]
             kinds: [email, phone, payment_card, iban] # default: every built-in kind
             patterns:                                 # optional, named; the name is the label
               - name: employee_id                     # [a-z][a-z0-9_]{0,39}, not a built-in kind
                 regex: "EMP-[0-9]{6}"                 # Python `re`; must not match ""
             restore: true                             # false: the app gets the placeholders

   CEL checks the names' shape and uniqueness; the controller compiles each
   regex (a bad one is a status condition on the policy, never a NACK). In
   the snapshot, next to `Policy.denied_backends`, a `redacted_backends`
   list of (provider, model, data classes, the policy that says so, and the
   rule: kinds, patterns, restore); the sidecar builds one `RedactionRule`
   per distinct rule when it swaps the snapshot (never per request). The
   strictest rule wins when several policies redact the same backend: the
   union of kinds and patterns, `restore: false` if any says so.

2. classify/plan (`proxy.request.classify`, `proxy.request.plan`): classify
   decides the data class as today (the scan's findings raise it to
   `personal`). When plan keeps a backend only because its rule says
   `redact`, the plan carries that backend's `RedactionRule`; the request
   gets one `Pseudonymizer` on first use (lazily: requests that never reach a
   redacting backend build nothing). When classify's scan ran on this request
   and found nothing, and the rule has no custom patterns, masking can be
   skipped: the scan reads a superset of what masking reads (it decodes URLs
   and text files), so masking would find nothing either.

3. attempt (`proxy.request.attempt`): for a backend whose plan says redact,
   it sends `redact_chat(parsed.request).request` (the parsed request stays
   intact for a fallback that needs no masking; the same pseudonymizer is
   reused across attempts so a retry sends the same placeholders). If
   `unmasked` is not empty the attempt is refused with a 400 naming the kinds
   (never the values): the rule promised those values would not leave.
   Embeddings requests have no answer to restore: mask them only when
   `restore` is false (or deny), since their vectors would be of placeholders.

4. relay (`proxy.request.relay`): streams are already decoded into internal
   chunks before the front end encodes them, so the relay wraps the front
   end's encoder: `restoring_encoder(frontend.stream_encoder(...),
   pseudonymizer.stream_restorer())` (the encoder itself when nothing is to
   be restored). Whole answers: `pseudonymizer.restore_response(answer.data)`
   before `frontend.render_chat`, and the provider's raw bytes must not be
   passed through (`Answer.native_openai`) when it restored something.

5. Telemetry and audit: the audit line and the server span get
   `redacted: {kind: count}` (counts only); metrics count redactions by kind.
   Captured content, when enabled, is the rewritten request (and
   `redact_text` for anything else), so the values never reach a span.

Limits to know: values are matched as found in the text they were in (a
value in a tool result's raw JSON is restored with that JSON's escapes); a
placeholder the model writes with JSON escapes (`\\u003cEMAIL_1\\u003e`) is
not recognised; a conversation that carries earlier placeholders (from
`restore: false` answers) keeps them as text, and this request never reuses
them for its own values.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.redaction.pseudonymize import Pseudonymizer, Redacted
    from proxy.redaction.restore import (
        RestoringEncoder,
        StreamRestorer,
        TextRestorer,
        restore_response,
        restoring_encoder,
    )
    from proxy.redaction.rule import PLACEHOLDER, RedactionRule

# Each name's module, imported on first use: the sidecar imports `proxy.redaction.table` for every
# snapshot, and the masking code only when a policy redacts (memory every injected pod would pay).
_MODULES = {
    "Pseudonymizer": "pseudonymize",
    "Redacted": "pseudonymize",
    "RestoringEncoder": "restore",
    "StreamRestorer": "restore",
    "TextRestorer": "restore",
    "restore_response": "restore",
    "restoring_encoder": "restore",
    "PLACEHOLDER": "rule",
    "RedactionRule": "rule",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "PLACEHOLDER",
    "Pseudonymizer",
    "Redacted",
    "RedactionRule",
    "RestoringEncoder",
    "StreamRestorer",
    "TextRestorer",
    "restore_response",
    "restoring_encoder",
]
