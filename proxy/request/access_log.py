"""The access log: one JSON line per request, from its outcome, on the `modelway.access` logger.

What an operator greps for when a call went wrong, as Envoy's access log gives it: when, which
workload, route, rule and backend, status and error type, tokens, cost, duration, time to first
token, data class, attempts and the trace id to open. Never prompt or answer text, never
credentials: every field is a name from the configuration, a number or a code; the one value the
app chose (the model it asked for) is cut short and scrubbed of key shapes when no route took it.

`--access-log=off` turns it off; `--access-log-sample=F` keeps that fraction of the successful
requests (every failed one is kept). `configure_access_logger` (called by `__main__`) writes the
lines as they are, one JSON object per line on stdout, apart from the operational log on stderr,
flushed within FLUSH_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from typing import IO, Any

import msgspec
import orjson

from proxy.errors import clip
from proxy.request.outcome import Outcome
from shared.scrub import scrub_shapes

LOGGER = "modelway.access"
_LOADED = time.time()


class AccessLogSettings(msgspec.Struct, frozen=True, kw_only=True):
    enabled: bool = True
    sample: float = 1.0  # the fraction of successful requests logged (failed ones always are)


class AccessLog:
    def __init__(self, settings: AccessLogSettings | None = None) -> None:
        settings = settings or AccessLogSettings()
        self.enabled = settings.enabled
        self._sample = settings.sample
        self._logger = logging.getLogger(LOGGER)
        self._second = -1
        self._stamp = ""

    def record(self, outcome: Outcome) -> None:
        if not self.enabled:
            return
        if outcome.error_type is None and self._sample < 1.0 and random.random() >= self._sample:
            return
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):  # (cached by the logging module)
            return
        line = orjson.dumps(self.entry(outcome))
        handlers = logger.handlers
        if len(handlers) == 1 and not logger.propagate:
            writer = handlers[0]
            if type(writer) is _Lines:  # as `configure_access_logger` set it up: the line as it is
                writer.add(line)
                return
        # Any other setup gets a record of our own instead of logger.info(): the stock one looks
        # up the caller's frame, thread and process for every line (~5 us).
        logger.handle(_AccessRecord(line.decode()))

    def entry(self, outcome: Outcome) -> dict[str, Any]:
        now = time.time()
        usage = outcome.usage
        return {
            "time": self._time(now - outcome.duration),  # when the request came in
            "workload": outcome.workload or None,
            "operation": outcome.operation,
            # A served model's name is the configuration's; any other is the app's text.
            "model": outcome.model if outcome.route else scrub_shapes(clip(outcome.model, 200)) or None,
            "stream": outcome.stream,
            "route": outcome.route or None,
            "rule": outcome.rule or None,
            "decision": outcome.decision or None,
            "backend": outcome.backend,
            "status": outcome.status,
            "error_type": outcome.error_type,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cached_input_tokens": usage.cached_input_tokens,  # of input_tokens, read from the prompt cache
            "cost_usd": outcome.cost,
            "duration_ms": _ms(outcome.duration),
            "ttft_ms": _ms(outcome.ttft) if outcome.ttft is not None else None,
            "data_class": outcome.data_class or None,
            "attempts": len(outcome.attempts),
            "trace_id": outcome.trace_id or None,
            "redacted": dict(outcome.redacted) if outcome.redacted else None,  # counts by kind, never values
        }

    def _time(self, when: float) -> str:
        """RFC 3339 in UTC with milliseconds; the part up to the second is made once a second."""
        second = int(when)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((when - second) * 1000):03d}Z"


def _ms(seconds: float) -> float:
    """Milliseconds to the microsecond (as round(x, 3), which costs ~10 times more)."""
    return int(seconds * 1_000_000) / 1000


class _AccessRecord(logging.LogRecord):
    """A LogRecord whose fixed fields are copied in from one dict: only the message and the time
    are made per line. (In the instance's __dict__: formatters read the fields from there.)"""

    def __init__(self, message: str) -> None:  # (the base's would look the fixed fields up)
        self.__dict__.update(_FIXED)
        self.msg = message
        self.created = now = time.time()
        self.msecs = (now - int(now)) * 1000
        self.relativeCreated = (now - _LOADED) * 1000


_FIXED = {
    name: value
    for name, value in vars(logging.LogRecord(LOGGER, logging.INFO, __file__, 0, "", (), None, "record")).items()
    if name not in ("msg", "created", "msecs", "relativeCreated")
}


def configure_access_logger(*, enabled: bool, stream: IO[str] | None = None) -> None:
    """The access lines as they are (no level or time prefix: each line is one JSON object), on
    stdout; the logger does not pass them on to the operational log."""
    logger = logging.getLogger(LOGGER)
    logger.propagate = False
    logger.setLevel(logging.INFO if enabled else logging.CRITICAL + 1)
    logger.handlers[:] = [_Lines(stream or sys.stdout)]


FLUSH_SECONDS = 0.2
FLUSH_BYTES = 64 * 1024  # written at once when this much is waiting (bounds the memory it holds)


class _Lines(logging.StreamHandler):  # type: ignore[type-arg]
    """Collects the lines and writes them in one write a moment later: under load one write
    carries the lines of many requests. A write per line would cost more than making it, and
    writing to the stream is a write per line when Python runs unbuffered (PYTHONUNBUFFERED, as
    in the image). A line waits at most FLUSH_SECONDS; at exit `logging.shutdown` flushes what is
    left. The access log hands its lines to `add` (bytes, no LogRecord); records from elsewhere
    on the logger go through `emit`."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        # One growing buffer, not a list of lines: each line's bytes are freed at once, as soon as
        # they are copied (~1 us a line less than keeping hundreds of ~400-byte objects alive).
        self._waiting = bytearray()
        self._flush_due = False
        self._binary: IO[bytes] | None = getattr(stream, "buffer", None)  # stdout's bytes, below its text

    def add(self, line: bytes) -> None:
        waiting = self._waiting
        waiting += line
        waiting.append(10)  # "\n"
        if len(waiting) >= FLUSH_BYTES:
            self.flush()
        elif not self._flush_due:
            self._schedule()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.add(record.getMessage().encode())
        except Exception:
            self.handleError(record)

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on the event loop: at once
            self.flush()
            return
        self._flush_due = True
        loop.call_later(FLUSH_SECONDS, self._flush_later)

    def _flush_later(self) -> None:
        self._flush_due = False
        self.flush()

    def flush(self) -> None:
        data = self._waiting
        if data:
            self._waiting = bytearray()
            try:
                if self._binary is not None:
                    self.stream.flush()  # (anything written as text before goes first)
                    self._binary.write(data)
                    self._binary.flush()
                else:
                    self.stream.write(data.decode())
            except Exception:  # a closed or broken stdout: the lines are lost, the sidecar goes on
                self.handleError(_AccessRecord("access log write failed"))
        super().flush()
