"""Reading budget spend back from the shared limit store, for the policies' status.

One reader per controller, reading only while this replica writes status (the Lease holder): every
`interval` seconds (15 by default), and soon after a policy's budgets change (at most every `min_gap`
seconds), one SCAN for the budget counters of every policy (bounded by `max_keys`) and MGETs of the
current windows' values: a few round trips per read, whatever the number of sidecars or policies.
A new reading replaces what status shows only when it moved (`spend.worth_publishing`), so a steady
trickle of spend is not a status write per policy per read.

When the store does not answer: the last numbers stay with the time they were read, status says so
(`SpendReported=False`), one warning is logged (and one line when it answers again), and nothing else
waits on it: reconciling never does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from controller import spend as sp
from controller.compile import Judgement
from controller.core import Controller
from controller.store import Key

log = logging.getLogger("modelway.spend")

DEFAULT_INTERVAL = 15.0
MIN_GAP = 2.0  # between reads a change of budgets brings forward
# One whole read, the scan and every MGET: generous, since a store that stops answering is caught by each
# call's own socket timeout (a second), while 300,000 keys take seconds to scan and parse in Python.
READ_TIMEOUT = 60.0
SCAN_COUNT = 1000
MGET_BATCH = 500
MAX_KEYS = 100_000  # budget counters looked at per read; beyond, status says "partial"
# Reads failed in a row before status says the store is unreachable: one lost read (a restart, a
# failover) is not worth a status write on every budgeted policy and another one when it answers.
DOWN_AFTER = 2
_FAILURES = (RedisError, OSError, TimeoutError)


def _rfc3339(now_s: float) -> str:
    return datetime.fromtimestamp(now_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SpendReader:
    """Keeps each budgeted policy's spend as status should show it; `spend()` is what status reads."""

    def __init__(
        self,
        client: Any,
        controller: Controller,
        *,
        prefix: str,
        interval: float = DEFAULT_INTERVAL,
        min_gap: float = MIN_GAP,
        timeout: float = READ_TIMEOUT,
        max_keys: int = MAX_KEYS,
        active: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._controller = controller
        self._prefix = prefix
        self._interval = interval
        self._min_gap = min_gap
        self._timeout = timeout
        self._max_keys = max_keys
        self._active = active
        self._clock = clock
        self._published: dict[Key, sp.PolicySpend] = {}
        self._published_at: dict[Key, float] = {}  # monotonic
        self._budgets: tuple[sp.Budget, ...] = ()  # as of the last read
        self._policies: object = None  # the store's policies `_current` was taken from (identity)
        self._current: tuple[sp.Budget, ...] = ()
        self._down = False
        self._failures = 0  # reads failed in a row
        self._listeners: list[Callable[[], None]] = []
        self._wake = asyncio.Event()
        self.reads = 0  # tests and debugging: reads done
        controller.subscribe(on_recompute=self._on_recompute, on_sync_change=lambda: None)

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called (on the loop, cheaply) when what `spend()` returns has changed."""
        self._listeners.append(callback)

    def spend(self) -> Mapping[Key, sp.PolicySpend]:
        return self._published

    def on_leadership(self, leading: bool) -> None:
        """This replica now writes status: read at once rather than at the next tick."""
        if leading:
            self._wake.set()

    def _on_recompute(self, judgement: Judgement) -> None:
        if self._current_budgets() != self._budgets:
            self._wake.set()  # a budget added, changed or gone: read soon rather than in 15 s

    def _current_budgets(self) -> tuple[sp.Budget, ...]:
        policies = self._controller.store.view().policies
        if policies is not self._policies:
            self._policies, self._current = policies, sp.budgets_of(policies)
        return self._current

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            self._wake.clear()  # before the read: a change during it brings the next one forward
            if self._active():
                try:
                    await self.read_once()
                except Exception:  # a bug must not end spend reading for good
                    log.exception("spend: reading budget counters failed")
            try:
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            except TimeoutError:
                continue
            await asyncio.sleep(max(0.0, started + self._min_gap - loop.time()))

    async def read_once(self) -> None:
        """One read of every budget counter; publishes what moved and tells the listeners."""
        self.reads += 1
        budgets = self._current_budgets()
        self._budgets = budgets
        now_s = self._clock()
        readings: dict[Key, sp.PolicySpend]
        if not budgets:
            readings = {}
        else:
            try:
                async with asyncio.timeout(self._timeout):
                    values, partial = await self._values(now_s)
            except _FAILURES as exc:
                problem = type(exc).__name__
                self._failures += 1
                if self._failures < DOWN_AFTER:
                    return  # status keeps what it shows until the next read says more
                if not self._down:
                    self._down = True
                    log.warning(
                        "spend: the limit store did not answer %d reads in a row (%s); policy status keeps the "
                        "last spend read and says so until it answers",
                        self._failures,
                        problem,
                    )
                policies = dict.fromkeys(b.policy for b in budgets)
                readings = {key: sp.unreachable(self._published.get(key), problem) for key in policies}
            else:
                self._failures = 0
                if self._down:
                    self._down = False
                    log.info("spend: the limit store answers again")
                readings = sp.summarize(
                    budgets, values, prefix=self._prefix, now_s=now_s, read_at=_rfc3339(now_s), partial=partial
                )
        if self._publish(readings):
            for listener in self._listeners:
                listener()

    async def _values(self, now_s: float) -> tuple[dict[str, int], bool]:
        """The current windows' budget counters (store key -> micro-USD), and whether the scan hit its bound."""
        windows = sp.windows_at(now_s)
        suffixes = tuple(f"/{measure}/{window}" for measure, window in windows.items())
        keys: list[str] = []
        partial = False
        seen = 0
        async for key in self._client.scan_iter(match=sp.scan_pattern(self._prefix), count=SCAN_COUNT):
            seen += 1
            if seen > self._max_keys:
                partial = True
                break
            if key.endswith(suffixes):  # a spent window is kept a day past its end: not today's
                keys.append(key)
        values: dict[str, int] = {}
        for start in range(0, len(keys), MGET_BATCH):
            batch: Sequence[str] = keys[start : start + MGET_BATCH]
            for key, raw in zip(batch, await self._client.mget(batch), strict=True):
                if raw is None:
                    continue  # expired between the scan and the read
                try:
                    values[key] = int(raw)
                except ValueError:
                    continue  # not a counter the sidecars wrote
        return values, partial

    def _publish(self, readings: Mapping[Key, sp.PolicySpend]) -> bool:
        now = time.monotonic()
        changed = False
        for gone in self._published.keys() - readings.keys():
            del self._published[gone]
            self._published_at.pop(gone, None)
            changed = True
        for key, reading in readings.items():
            since = now - self._published_at.get(key, now)
            if sp.worth_publishing(self._published.get(key), reading, since_published=since):
                self._published[key] = reading
                self._published_at[key] = now
                changed = True
        return changed

    async def close(self) -> None:
        await self._client.aclose()


class UnsharedSpend:
    """Without a shared store: every budgeted policy's status says that no shared spend exists."""

    def __init__(self, controller: Controller) -> None:
        self._controller = controller
        self._policies: object = None
        self._spend: dict[Key, sp.PolicySpend] = {}

    def spend(self) -> Mapping[Key, sp.PolicySpend]:
        policies = self._controller.store.view().policies
        if policies is not self._policies:
            self._policies = policies
            self._spend = {b.policy: sp.NO_STORE for b in sp.budgets_of(policies)}
        return self._spend

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Nothing to tell: what it says changes only with the policies, and a recompute follows those."""
