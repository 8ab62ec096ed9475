"""Stage 4, admit: whether the request may go to a backend now (limits, budgets, providers' capacity).

`Admission.admit` is one dict lookup per candidate backend when the snapshot has limits, and one
attribute read when it has none: a request no counter binds gets no `Gate`, and pays nothing more.
A request some counter binds gets a `Gate` (`proxy.request.gate`, loaded with the snapshots that have limits),
which the attempt stage asks before each backend's first call: it reserves what the request may cost on
that backend's counters (`proxy.limits.estimate`) and
says go, skip (the provider's capacity is spent: the next backend, before the provider answers 429),
reroute (a spent budget names cheaper backends), or raises the 429 (503 for a closed limit the store
could not check) in the app's API, with the rate-limit headers the SDKs read.

The account stage hands the gate the request's outcome (`Gate.settle`): the answering backend is
charged its real usage, the others nothing (`proxy.limits.gate`). Settlements with the shared store
run in the background, a bounded set of tasks, so no answer waits for it (the in-process limiter's,
which never wait, as loop callbacks); concurrency leases are returned on every path, since every
planned request reaches the account stage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from proxy.limits.estimate import requested_output_tokens
from proxy.limits.settings import LimitSettings
from proxy.policy.audit import AuditLog
from proxy.policy.classify import Classification
from proxy.request.plan import body_bytes as measured_body_bytes
from proxy.routing.table import Plan
from proxy.runtime import Runtime
from proxy.telemetry import Telemetry

if TYPE_CHECKING:
    from proxy.limits.model import Reservation, Usage
    from proxy.limits.slot import LimiterHandle, LimiterSlot
    from proxy.request.gate import Api, Gate

log = logging.getLogger("modelway.limits")

# Settlements waiting for the store at once; past it a settlement is dropped (its reservation stays
# charged until its window or lease ends: the error is conservative) and counted.
MAX_PENDING_SETTLEMENTS = 1024


class Admission:
    """Built once per sidecar (`proxy.__main__`), with the sidecar's limit flags."""

    def __init__(
        self,
        *,
        limits: LimitSettings | None = None,
        telemetry: Telemetry | None = None,
        audit: AuditLog | None = None,
        max_pending: int = MAX_PENDING_SETTLEMENTS,
    ) -> None:
        self._limits = limits or LimitSettings()
        self._slot: LimiterSlot | None = None
        self.telemetry = telemetry or Telemetry()
        self.audit = audit or AuditLog()
        self._max_pending = max_pending
        self._settling: set[asyncio.Task[None]] = set()
        self.dropped_settlements = 0

    @property
    def slot(self) -> LimiterSlot:
        """The limiter the sidecar counts with, across snapshots: made when a gate first reserves (its code
        loaded with the first snapshot that has limits), or for the admin port's /limits."""
        if self._slot is None:
            from proxy.limits.slot import LimiterSlot

            self._slot = LimiterSlot(self._limits)
        return self._slot

    @slot.setter
    def slot(self, slot: LimiterSlot) -> None:
        self._slot = slot

    def admit(
        self,
        *,
        runtime: Runtime,
        plan: Plan,
        classification: Classification,
        operation: str,
        model: str,
        api: str,
        body: Mapping[str, Any],
        request: web.BaseRequest,
        body_bytes: int | None = None,
    ) -> Gate | None:
        """The request's gate, or None when no counter binds any backend it may be sent to.
        `body_bytes`: the body's size when the plan stage already measured it."""
        table = runtime.limits
        if table.empty:
            return None
        route = plan.route.name
        for candidate in plan.candidates:
            backend = candidate.backend
            if table.counters(route, backend.provider, backend.model):
                break
        else:
            return None
        if body_bytes is None:  # what the prompt may cost is read from its size
            body_bytes = measured_body_bytes(request, body)
        # (imported by `Runtime.build` with the snapshot whose limits bind here: a lookup, not a load)
        from proxy.request.gate import Gate

        return Gate(
            self,
            runtime=runtime,
            plan=plan,
            classification=classification,
            operation=operation,
            model=model,
            api=cast("Api", api),
            prompt_bytes=body_bytes,
            requested_output=requested_output_tokens(body),
        )

    def settle_later(self, handle: LimiterHandle, items: list[tuple[Reservation, Usage]]) -> None:
        settle_now = getattr(handle.limiter, "settle_now", None)
        if settle_now is not None:  # the in-process limiter waits for nothing: a callback, not a task
            loop = asyncio.get_running_loop()
            for reservation, usage in items:
                loop.call_soon(settle_now, reservation, usage)  # (after the answer is written)
            return
        if len(self._settling) >= self._max_pending:
            self.dropped_settlements += 1
            if self.dropped_settlements % 1000 == 1:
                log.warning(
                    "limits: %d settlements dropped (the counter store is slow); their reservations stay charged",
                    self.dropped_settlements,
                )
            return
        handle.acquire()
        task = asyncio.get_running_loop().create_task(self._settle(handle, items))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, handle: LimiterHandle, items: list[tuple[Reservation, Usage]]) -> None:
        try:
            for reservation, usage in items:
                await handle.limiter.settle(reservation, usage)
        except Exception:  # a limiter's own failures are handled inside it: this is a bug, logged
            log.exception("limits: a settlement failed")
        finally:
            handle.release()

    async def settled(self) -> None:
        """Waits for the settlements under way (tests, and shutdown)."""
        await asyncio.sleep(0)  # the in-process limiter's callbacks
        while self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)

    def status(self, runtime: Runtime | None) -> dict[str, Any]:
        """For the admin port's /limits: the limits that bind this sidecar and where they stand."""
        from proxy.limits.status import limits_status

        return limits_status(runtime, self._slot.current if self._slot is not None else None)

    async def close(self) -> None:
        try:
            async with asyncio.timeout(2.0):
                await self.settled()
        except TimeoutError:
            log.warning("limits: %d settlements still pending at shutdown", len(self._settling))
        if self._slot is not None:
            await self._slot.close()
