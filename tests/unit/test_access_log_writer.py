"""The access log's writer: the lines of a burst of requests leave in one write to stdout (a write
per line would cost each request a syscall when Python runs unbuffered, as in the image), each
line whole and in order, and none is left behind at exit."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from proxy.providers.base import Usage
from proxy.request.access_log import FLUSH_SECONDS, LOGGER, AccessLog, configure_access_logger
from proxy.request.outcome import NOTHING_FOUND, Outcome


class _Stdout(io.TextIOWrapper):
    """stdout as PYTHONUNBUFFERED makes it (every text write goes straight down), counting the
    writes that reach the file."""

    def __init__(self) -> None:
        self.raw_writes: list[bytes] = []
        outer = self

        class _Raw(io.RawIOBase):
            def writable(self) -> bool:
                return True

            def write(self, data: bytes) -> int:  # type: ignore[override]
                outer.raw_writes.append(bytes(data))
                return len(data)

        raw: Any = _Raw()  # (typeshed's BufferedWriter wants a raw stream of its own kinds)
        super().__init__(io.BufferedWriter(raw), encoding="utf-8", write_through=True)

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in b"".join(self.raw_writes).decode().splitlines()]


@pytest.fixture
def stdout() -> Iterator[_Stdout]:
    stream = _Stdout()
    logger = logging.getLogger(LOGGER)
    saved = logger.handlers[:], logger.propagate, logger.level
    configure_access_logger(enabled=True, stream=stream)
    yield stream
    logger.handlers[:], logger.propagate, logger.level = saved


def _outcome(number: int) -> Outcome:
    return Outcome(
        operation="chat",
        model="gpt",
        stream=False,
        workload="ns/app",
        data_class="internal",
        route="gpt",
        rule="default",
        decision="allow",
        backend="oai/gpt-4o",
        response_model="gpt-4o",
        usage=Usage(number, 1),
        cost=None,
        attempts=(),
        status=200,
        error_type=None,
        error_message="",
        ttft=None,
        duration=0.01,
        trace_id="",
        personal_data=NOTHING_FOUND,
    )


async def test_a_burst_of_requests_is_written_in_one_write_within_the_flush_delay(stdout: _Stdout) -> None:
    access_log = AccessLog()
    for number in range(50):
        access_log.record(_outcome(number))
    assert stdout.raw_writes == []  # not yet: they wait to leave together
    await asyncio.sleep(FLUSH_SECONDS + 0.1)
    assert len(stdout.raw_writes) == 1
    assert [line["input_tokens"] for line in stdout.lines()] == list(range(50))


def test_lines_still_waiting_are_written_at_exit(stdout: _Stdout) -> None:
    async def serve() -> None:
        AccessLog().record(_outcome(7))

    asyncio.run(serve())  # the loop ends before the flush it scheduled
    logging.getLogger(LOGGER).handlers[0].flush()  # as logging.shutdown does at exit
    assert [line["input_tokens"] for line in stdout.lines()] == [7]
