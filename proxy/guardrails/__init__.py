"""Guardrail callouts: HTTP services a policy asks about a request's text and about its answer.

`table` picks the guardrails of a request (built once per snapshot), `texts` finds the text they
are asked about and puts replacements back, `client` calls them (`kind: modelway` or
`openai-moderation`), `window` is the sliding window streamed answers are checked in. The request
stage is `proxy.request.guard`; the protocols are in docs/guardrails.md.
"""
