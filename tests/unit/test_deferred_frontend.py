"""A front end imported by its first request (proxy.deferred_frontend): once for all the requests that
wait for it, in a worker thread while the event loop serves others, not undone by a request that
leaves, and an import that fails is a 503 then tried again."""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.deferred_frontend import DeferredFrontend
from proxy.errors import ApiError

_NAMES = itertools.count()

# A module whose import takes `seconds`, fails while `probe_state.failures` says so, and records
# which thread ran it.
_PROBE = """
import threading, time
import probe_state
probe_state.imports.append(threading.current_thread().name)
if probe_state.failures:
    probe_state.failures -= 1
    raise RuntimeError("the module is broken")
time.sleep(probe_state.seconds)

class Frontend:
    api = "probe"
"""


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """A fresh probe module's name, and its state (`imports`, `failures`, `seconds`)."""
    name = f"deferred_probe_{next(_NAMES)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(_PROBE))
    (tmp_path / "probe_state.py").write_text("imports = []\nfailures = 0\nseconds = 0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "probe_state", raising=False)
    import probe_state

    yield name, probe_state
    sys.modules.pop(name, None)
    sys.modules.pop("probe_state", None)


def _deferred(name: str, *, retry_seconds: float = 5.0) -> DeferredFrontend[Any]:
    return DeferredFrontend(
        what="the probe front end", module=name, build=lambda m: m.Frontend(), retry_seconds=retry_seconds
    )


async def test_concurrent_first_requests_share_one_import_run_in_a_worker_thread_while_the_loop_serves(
    probe: Any,
) -> None:
    name, state = probe
    state.seconds = 0.3
    deferred = _deferred(name)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    loaded = await asyncio.gather(*(deferred.load() for _ in range(5)))
    ticker.cancel()
    assert len({id(frontend) for frontend in loaded}) == 1 and loaded[0].api == "probe"
    assert deferred.loaded is loaded[0]
    assert len(state.imports) == 1 and state.imports[0] != threading.main_thread().name
    assert ticks >= 3  # the loop ran other work during the 0.3 s import (held by it: none)


async def test_a_first_request_that_leaves_does_not_cancel_the_import_the_next_one_uses(probe: Any) -> None:
    name, state = probe
    state.seconds = 0.3
    deferred = _deferred(name)
    first = asyncio.create_task(deferred.load())
    await asyncio.sleep(0.05)  # the import under way
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (await deferred.load()).api == "probe"
    assert len(state.imports) == 1


async def test_an_import_that_fails_is_a_503_until_the_pause_ends_then_it_is_tried_again(
    probe: Any, caplog: pytest.LogCaptureFixture
) -> None:
    name, state = probe
    state.failures = 1
    deferred = _deferred(name, retry_seconds=0.3)
    waiting = [asyncio.create_task(deferred.load()) for _ in range(3)]
    for task in waiting:  # all who waited for the import
        with pytest.raises(ApiError) as failed:
            await task
        assert failed.value.status == 503 and failed.value.code == "frontend_unavailable"
        assert "could not load the probe front end" in failed.value.message
        assert failed.value.headers == {"retry-after": "1"}
    with pytest.raises(ApiError):  # within the pause: answered at once, nothing imported
        await deferred.load()
    assert len(state.imports) == 1
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.exc_info and "the module is broken" in str(record.exc_info[1])
    await asyncio.sleep(0.35)
    assert (await deferred.load()).api == "probe"
    assert len(state.imports) == 2


async def test_once_loaded_no_import_is_attempted_again(probe: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    name, _ = probe
    deferred = _deferred(name)
    frontend = await deferred.load()

    def no_import(module: str) -> None:
        raise AssertionError("imported again")

    monkeypatch.setattr("importlib.import_module", no_import)
    assert await deferred.load() is frontend and deferred.loaded is frontend
