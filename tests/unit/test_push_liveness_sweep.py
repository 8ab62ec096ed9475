"""The stream sweep never closes a silent sidecar without pinging it first, however late it runs."""

from __future__ import annotations

import asyncio
from typing import Any

from controller.push import Liveness


class FakeStream:
    def __init__(self) -> None:
        self.closed = False
        self.pings = 0
        self.close_code: int | None = None

    async def ping(self) -> None:
        self.pings += 1

    async def close(self, *, code: int) -> bool:
        self.closed, self.close_code = True, code
        return True


def _sweeps(liveness: Liveness, times: list[float]) -> None:
    async def run() -> None:
        for now in times:
            await liveness.sweep(now)
            await asyncio.sleep(0)  # let a close task run

    asyncio.run(run())


def test_a_late_sweep_pings_before_it_closes() -> None:
    liveness = Liveness(heartbeat=10)
    stream: Any = FakeStream()
    liveness.heard[stream] = 0.0
    _sweeps(liveness, [100.0])  # the first sweep to see it comes long after it fell silent
    assert stream.pings == 1 and not stream.closed
    _sweeps(liveness, [102.0])  # within half a heartbeat of the ping: still given its chance
    assert not stream.closed
    _sweeps(liveness, [105.0])
    assert stream.closed and stream.pings == 1


def test_a_stream_that_answers_the_ping_stays() -> None:
    liveness = Liveness(heartbeat=10)
    stream: Any = FakeStream()
    liveness.heard[stream] = 0.0
    _sweeps(liveness, [12.0])
    liveness.heard[stream] = 12.5  # the pong, seen by its stream loop
    _sweeps(liveness, [18.0, 30.0])  # 17.5 s after the pong: silent again, so pinged again, not closed
    assert stream.pings == 2 and not stream.closed
