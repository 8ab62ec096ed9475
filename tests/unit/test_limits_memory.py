"""The in-process limiter runs the shared semantic suite (tests/limits_support/semantics.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from proxy.limits.memory import InProcessLimiter
from tests.limits_support.semantics import *  # noqa: F403  (the shared suite's tests and fixtures)
from tests.limits_support.semantics import FakeClock


@pytest.fixture
def make_limiter() -> Callable[[FakeClock], Awaitable[InProcessLimiter]]:
    async def make(clock: FakeClock) -> InProcessLimiter:
        return InProcessLimiter(clock=clock)

    return make
