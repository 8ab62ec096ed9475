"""Asking guardrails: one POST each, in parallel, each within its own timeout.

Over the sidecar's own HTTP client (`proxy.http_client`: pooled keep-alive connections, answers
held to a size), so a guardrail on loopback costs a write and a read, not a new session. An answer
is untrusted: anything but a well-formed one (late, refused, an HTTP error, bad JSON, a replace of
the wrong shape) is an `error` verdict, and the guardrail's failure mode decides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
import orjson

from proxy.http_client import HttpClient
from proxy.snapshot import Guardrail, GuardrailPhase

Decision = Literal["allow", "deny", "replace", "error"]
_HEADERS = {"content-type": "application/json", "accept": "application/json"}
_REASON_CHARS = 300  # what an error, a log line or a span quotes of a guardrail's reason
_MIN_ANSWER_BYTES = 64 * 1024  # an answer's bound: this, or twice what was sent (a replace echoes it)


class Verdict(msgspec.Struct, frozen=True):
    guardrail: Guardrail
    decision: Decision
    reason: str = ""
    texts: list[str] | None = None  # a replace's texts, as many as were sent
    seconds: float = 0.0


class Asked(msgspec.Struct, frozen=True):
    """What every guardrail of one check is told besides the texts."""

    phase: GuardrailPhase
    model: str
    route: str
    workload: str


class GuardrailClient:
    def __init__(self, *, client: HttpClient) -> None:
        self._client = client

    async def ask_all(self, guardrails: Sequence[Guardrail], texts: list[str], asked: Asked) -> list[Verdict]:
        """Every guardrail's verdict, in `guardrails`' order; none raises (CancelledError aside)."""
        if len(guardrails) == 1:
            return [await self.ask(guardrails[0], texts, asked)]
        return list(await asyncio.gather(*(self.ask(g, texts, asked) for g in guardrails)))

    async def ask(self, guardrail: Guardrail, texts: list[str], asked: Asked) -> Verdict:
        started = time.perf_counter()
        body = _request_body(guardrail, texts, asked)
        limit = min(max(_MIN_ANSWER_BYTES, 2 * len(body)), self._client.limits.max_body_bytes)
        try:
            async with asyncio.timeout(guardrail.timeout_ms / 1000):
                resp = await self._client.post(guardrail.url, body=body, headers=_HEADERS)
                async with resp:
                    if resp.status != 200:
                        failed = f"answered HTTP {resp.status}"
                        return Verdict(guardrail, "error", failed, seconds=time.perf_counter() - started)
                    answer = await resp.read(limit)
        except TimeoutError:
            failed = f"no answer within {guardrail.timeout_ms} ms"
            return Verdict(guardrail, "error", failed, seconds=time.perf_counter() - started)
        except (OSError, ValueError) as exc:  # refused, reset, cut short, too large, a bad head
            failed = f"unreachable or unreadable ({type(exc).__name__})"
            return Verdict(guardrail, "error", failed, seconds=time.perf_counter() - started)
        seconds = time.perf_counter() - started
        try:
            parsed = orjson.loads(answer)
        except orjson.JSONDecodeError:
            return Verdict(guardrail, "error", "answered something that is not JSON", seconds=seconds)
        if guardrail.kind == "openai-moderation":
            return _moderation_verdict(guardrail, parsed, seconds)
        return _modelway_verdict(guardrail, parsed, len(texts), seconds)


def _request_body(guardrail: Guardrail, texts: list[str], asked: Asked) -> bytes:
    if guardrail.kind == "openai-moderation":
        return orjson.dumps({"input": texts})
    return orjson.dumps(
        {"phase": asked.phase, "texts": texts, "model": asked.model, "route": asked.route, "workload": asked.workload}
    )


def _modelway_verdict(guardrail: Guardrail, answer: Any, sent: int, seconds: float) -> Verdict:
    if not isinstance(answer, dict) or answer.get("decision") not in ("allow", "deny", "replace"):
        return Verdict(guardrail, "error", "answered without a decision of allow, deny or replace", seconds=seconds)
    decision = answer["decision"]
    reason = answer.get("reason")
    reason = reason[:_REASON_CHARS] if isinstance(reason, str) else ""
    if decision != "replace":
        return Verdict(guardrail, decision, reason, seconds=seconds)
    texts = answer.get("texts")
    if not isinstance(texts, list) or len(texts) != sent or not all(isinstance(t, str) for t in texts):
        return Verdict(guardrail, "error", f"answered replace without {sent} texts", seconds=seconds)
    return Verdict(guardrail, "replace", reason, texts, seconds=seconds)


def _moderation_verdict(guardrail: Guardrail, answer: Any, seconds: float) -> Verdict:
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        return Verdict(guardrail, "error", "answered without a results list", seconds=seconds)
    flagged = [r for r in results if r.get("flagged") is True]
    if not flagged:
        return Verdict(guardrail, "allow", seconds=seconds)
    categories = sorted(
        {
            str(name)
            for r in flagged
            if isinstance(r.get("categories"), dict)
            for name, value in r["categories"].items()
            if value is True
        }
    )
    reason = f"flagged: {', '.join(categories)}" if categories else "flagged"
    return Verdict(guardrail, "deny", reason[:_REASON_CHARS], seconds=seconds)
