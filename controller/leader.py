"""Leader election on a coordination.k8s.io/v1 Lease, the way client-go's leaderelection does it.

Every replica serves sidecars; only the leader writes status. A candidate takes
the Lease when it is absent, released (no holder) or expired; the holder
renews it every `renew_every`. Every write carries the resourceVersion we
read, so of two candidates racing for an expired Lease exactly one wins (the
other gets 409 Conflict).

A leader that cannot renew for `renew_deadline` (< lease_duration) steps down
on its own, so it stops acting before anyone else may take over. On a clean
shutdown the holder clears holderIdentity, and a successor takes over at its
next retry instead of waiting for the Lease to expire.

Expiry is judged on observed time, never by comparing renewTime with our own
clock: each replica remembers the Lease record it last read (holder, times,
transitions, resourceVersion) and the moment, on its own monotonic clock, it
saw that record change. The Lease has expired only when this replica has not
seen it change for the holder's leaseDurationSeconds. Clock *offsets* between
nodes (a node an hour ahead or behind) therefore do not matter at all; what
must hold is that clocks *run* at about the same rate: the holder gives up at
`renew_deadline`, counted from before its last successful renewal, while a
successor waits `lease_duration` counted from after it saw that renewal, so
the ratio of the two is the rate difference tolerated. The wall clock only
stamps renewTime and acquireTime, for people reading the Lease. The price: a
replica seeing a held Lease for the first time (a fresh start after a crash)
waits one full leaseDurationSeconds before taking it, however old it looks.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from controller.kube.client import KubeClient
from controller.kube.errors import KubeApiError, KubeError

log = logging.getLogger("modelway.leader")

DEFAULT_LEASE_NAME = "modelway-controller"


def default_identity(pod_name: str | None = None) -> str:
    """Pod name plus a random suffix: a restarted pod must not mistake its predecessor's Lease for its own."""
    return f"{pod_name or socket.gethostname()}_{secrets.token_hex(4)}"


def micro_time(moment: datetime) -> str:
    """metav1.MicroTime, what Lease times are: RFC 3339 with microseconds, in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class LeaseElector:
    """Acquires and renews one Lease.

    `monotonic` (seconds, any origin) measures every interval: renewal
    deadlines and how long the Lease has gone unchanged. `wall_clock` only
    stamps the times written into the Lease. Both are injectable so tests can
    skew one replica's clocks against another's.
    """

    def __init__(
        self,
        client: KubeClient,
        *,
        namespace: str,
        identity: str,
        name: str = DEFAULT_LEASE_NAME,
        lease_duration: float = 15.0,
        renew_every: float = 5.0,
        retry_every: float = 2.0,
        renew_deadline: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not renew_every < lease_duration:
            raise ValueError("renew_every must be shorter than lease_duration")
        self._client = client
        self.name, self.namespace, self.identity = name, namespace, identity
        self._duration_seconds = max(1, math.ceil(lease_duration))  # the API takes whole seconds
        self._renew_every = renew_every
        self._retry_every = retry_every
        # Like client-go's renewDeadline (10 s of 15 s): give up leading before the Lease can expire.
        self._renew_deadline = renew_deadline if renew_deadline is not None else lease_duration * 2 / 3
        if not self._renew_deadline < self._duration_seconds:
            raise ValueError("renew_deadline must be shorter than lease_duration")
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._leading = False
        self._renewed_at = 0.0  # monotonic time just before our last successful acquire/renew began
        # The Lease as last read or written, and when (monotonic) we saw it change: expiry is judged on these.
        self._observed: dict[str, Any] | None = None
        self._observed_at = 0.0
        self._problem = ""  # the last error seen, so a streak of the same one is logged once
        self._listeners: list[Callable[[bool], None]] = []

    # --- what others see ----------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        # Also false once our last renewal is too old, even before the loop notices (a starved loop).
        return self._leading and self._monotonic() - self._renewed_at < self._renew_deadline

    def add_listener(self, callback: Callable[[bool], None]) -> None:
        """`callback(is_leader)` on every gain and loss, called on the event loop."""
        self._listeners.append(callback)

    # --- the loop -----------------------------------------------------------------

    async def run(self) -> None:
        """Acquire and renew until cancelled; on cancellation release the Lease if we hold it."""
        log.info("leader election: running as %s on Lease %s/%s", self.identity, self.namespace, self.name)
        try:
            while True:
                await asyncio.sleep(await self._tick())
        finally:
            if self._leading:
                # A bounded release: shutdown must not hang on an unreachable API server.
                try:
                    async with asyncio.timeout(max(1.0, self._retry_every)):
                        await self.release()
                except (KubeError, TimeoutError) as exc:
                    log.warning(
                        "leader election: could not release Lease %s/%s (%s); it expires in %d s",
                        self.namespace,
                        self.name,
                        exc,
                        self._duration_seconds,
                    )
            self._set_leading(False)

    async def _tick(self) -> float:
        """One try to acquire or renew; returns how long to wait before the next."""
        # Before the request: the write lands after this, so a successor, which counts from when it
        # sees the write, always waits longer than our renew_deadline counted from here.
        started = self._monotonic()
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation (gh-86296),
            # and a stop that never lands would keep an elector running after shutdown.
            async with asyncio.timeout(self._renew_deadline):
                held = await self.try_acquire_or_renew()
        except (KubeError, TimeoutError) as exc:
            held = None
            problem = str(exc) or type(exc).__name__
            if self._leading and self._monotonic() - self._renewed_at >= self._renew_deadline:
                log.warning(
                    "leader election: could not renew Lease %s/%s for %.0f s (%s); stepping down",
                    self.namespace,
                    self.name,
                    self._renew_deadline,
                    problem,
                )
                self._set_leading(False)
            elif problem != self._problem:  # each distinct problem once per streak, not every retry
                log.warning("leader election: Lease %s/%s: %s; retrying", self.namespace, self.name, problem)
            self._problem = problem
        else:
            if self._problem:
                log.info("leader election: Lease %s/%s reachable again", self.namespace, self.name)
            self._problem = ""
        if held is True:
            self._renewed_at = started
            self._set_leading(True)
            return self._renew_every
        if held is False:
            self._set_leading(False)
        # held is None (a conflict or an error): a leader keeps leading until its deadline.
        return self._retry_every

    async def try_acquire_or_renew(self) -> bool | None:
        """True: we hold the Lease now. False: someone else validly does. None: we lost a write race."""
        now = micro_time(self._wall_clock())
        lease = await self._client.get_lease(self.name, namespace=self.namespace)
        mine = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self._duration_seconds,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 0,
        }
        try:
            if lease is None:
                self._observe(await self._client.create_lease(self.name, namespace=self.namespace, spec=mine))
                return True
            self._observe(lease)
            spec: dict[str, Any] = dict(lease.get("spec") or {})
            holder = spec.get("holderIdentity") or ""
            if holder and holder != self.identity and not self._observed_expired():
                return False
            if holder == self.identity:  # renew: only the times move
                spec |= {"renewTime": now, "leaseDurationSeconds": self._duration_seconds}
                spec.setdefault("acquireTime", now)
            else:  # take over a released or expired Lease
                if holder:
                    log.info(
                        "leader election: Lease %s/%s held by %s has not changed for %d s; taking over",
                        self.namespace,
                        self.name,
                        holder,
                        _duration_of(spec, self._duration_seconds),
                    )
                spec = mine | {"leaseTransitions": int(spec.get("leaseTransitions") or 0) + 1}
            # Carries the resourceVersion we read: a write since then makes this a 409.
            self._observe(await self._client.update_lease({**lease, "spec": spec}))
            return True
        except KubeApiError as exc:
            if exc.status == 409:  # another replica wrote first (created it, or updated since our read)
                return None
            raise

    def _observe(self, lease: Mapping[str, Any]) -> None:
        """Remember the Lease record; restart the expiry count only when it differs from the last one seen."""
        record = {
            "resourceVersion": (lease.get("metadata") or {}).get("resourceVersion"),
            "spec": dict(lease.get("spec") or {}),
        }
        if record != self._observed:
            self._observed = record
            self._observed_at = self._monotonic()

    def _observed_expired(self) -> bool:
        """Unchanged, as far as this replica has seen, for the holder's own leaseDurationSeconds."""
        spec = (self._observed or {}).get("spec") or {}
        return self._monotonic() - self._observed_at >= _duration_of(spec, self._duration_seconds)

    async def release(self) -> None:
        """Give the Lease up now (clean shutdown): a successor need not wait for it to expire."""
        lease = await self._client.get_lease(self.name, namespace=self.namespace)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        now = micro_time(self._wall_clock())
        spec = {k: v for k, v in (lease.get("spec") or {}).items() if k != "holderIdentity"}
        spec |= {"leaseDurationSeconds": 1, "renewTime": now, "acquireTime": now}
        try:
            self._observe(await self._client.update_lease({**lease, "spec": spec}))
        except KubeApiError as exc:
            if exc.status != 409:  # 409: someone already took it over
                raise
        log.info("leader election: released Lease %s/%s", self.namespace, self.name)
        self._set_leading(False)

    def _set_leading(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            log.info("leader election: %s is now the leader (Lease %s/%s)", self.identity, self.namespace, self.name)
        else:
            log.info("leader election: %s is no longer the leader", self.identity)
        for callback in list(self._listeners):
            try:
                callback(leading)
            except Exception:  # a listener's bug must not stop the election
                log.exception("leader election: a listener failed")


def _duration_of(spec: Mapping[str, Any], default_seconds: int) -> int:
    """The holder's promise, not ours (a released Lease says 1 s)."""
    seconds = spec.get("leaseDurationSeconds")
    return seconds if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds > 0 else default_seconds
