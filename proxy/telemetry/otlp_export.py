"""A lean OTLP/HTTP (protobuf) span exporter for the sidecar; its transport (bytes in, bounded
retries) also posts the metrics (`proxy.telemetry.otlp_metrics`).

The stock ``opentelemetry-exporter-otlp-proto-http`` builds a protobuf object
tree per span (~90 µs of Python per sidecar span) and posts it with ``requests``
(with the protobuf runtime, ~3 MiB RSS and ~30 ms to import). Here the bytes
come from ``proxy.telemetry.otlp_encode`` and are posted on a kept-alive connection
(``proxy.telemetry.otlp_http``: one write per post, the answer read without ``http.client``'s
per-post cost).

Posting runs in a worker thread (``proxy.telemetry.span_queue.SpanQueue``'s, or the SDK's
BatchSpanProcessor's), never on the event loop (the lean recorder's spans are encoded as they end,
``SpanQueue.put``; the SDK's spans here, in the worker).
It never raises: a failed batch is counted, logged once per streak of failures,
and reported as ``SpanExportResult.FAILURE``.

Configuration follows the OTLP exporter spec's variables (``environ``):
``OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT``, ``_HEADERS``, ``_TIMEOUT`` (ms),
``_COMPRESSION`` (gzip, deflate, none), ``_CERTIFICATE``, ``_CLIENT_KEY``,
``_CLIENT_CERTIFICATE``. HTTP(S) proxies from the environment are not used.
"""

from __future__ import annotations

import contextlib
import enum
import http.client
import logging
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from proxy.telemetry.otlp_encode import Buffer, SpanEncoder
from proxy.telemetry.otlp_http import Connection, request_head
from proxy.telemetry.otlp_wire import decode_fields
from shared.scrub import parse_otlp_headers

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
DEFAULT_TIMEOUT = 10.0  # seconds
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
USER_AGENT = "modelway-otlp-exporter/0.1 (OTLP/HTTP protobuf; Python)"

# ---------------------------------------------------------------------------
# configuration


def _env(environ: Mapping[str, str], name: str) -> str | None:
    """``OTEL_EXPORTER_OTLP_TRACES_<name>``, else ``OTEL_EXPORTER_OTLP_<name>``; None when neither is set."""
    value = environ.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or environ.get(f"OTEL_EXPORTER_OTLP_{name}")
    return value.strip() if value and value.strip() else None


def resolve_endpoint(environ: Mapping[str, str]) -> str:
    """The traces endpoint is used as-is; the generic one gets ``/v1/traces`` appended."""
    if traces := (environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or "").strip():
        return traces
    if base := (environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip():
        return base.rstrip("/") + "/v1/traces"
    return DEFAULT_ENDPOINT


def parse_headers(value: str | None, *, variable: str = "OTEL_EXPORTER_OTLP_HEADERS") -> dict[str, str]:
    """``k1=v1,k2=v2`` (W3C Baggage-like, URL-encoded); keys lower-cased, bad items skipped and
    logged by position and header name (their text may be a token: never logged)."""
    headers, problems = parse_otlp_headers(value, variable=variable)
    for problem in problems:
        log.warning("OTLP: %s", problem)
    return headers


def resolve_timeout(environ: Mapping[str, str]) -> float:
    """Seconds, from ``OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT`` in milliseconds (spec), default 10 s."""
    raw = _env(environ, "TIMEOUT")
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        ms = float(raw)
    except ValueError:
        ms = -1.0
    if not ms > 0:
        log.warning("OTLP: invalid timeout %r (milliseconds); using %ss", raw, DEFAULT_TIMEOUT)
        return DEFAULT_TIMEOUT
    return ms / 1000.0


def resolve_compression(environ: Mapping[str, str], value: str | None = None) -> str:
    """``value`` if given, else ``OTEL_EXPORTER_OTLP[_TRACES]_COMPRESSION``: gzip, deflate or none."""
    value = (value or _env(environ, "COMPRESSION") or "none").strip().lower()
    if value not in ("gzip", "deflate", "none"):
        log.warning("OTLP: unsupported compression %r; sending uncompressed", value)
        return "none"
    return value


# ---------------------------------------------------------------------------
# the exporter


class SpanExportResult(enum.Enum):
    """An export's outcome, named and numbered as the SDK's ``SpanExportResult`` (whose
    BatchSpanProcessor ignores it): the lean path does without importing the SDK."""

    SUCCESS = 0
    FAILURE = 1


class OTLPHttpSpanExporter:
    """OTLP/HTTP protobuf span exporter on ``http.client`` (see the module docstring); a
    ``SpanExporter`` to the SDK's BatchSpanProcessor by its methods (export, shutdown,
    force_flush), so the lean path needs no SDK import.

    ``exported_spans``, ``failed_spans`` and ``dropped_spans`` (handed to the
    exporter after shutdown) count spans since start, for metrics to read.
    """

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        compression: str | None = None,
        certificate_file: str | None = None,
        client_key_file: str | None = None,
        client_certificate_file: str | None = None,
        environ: Mapping[str, str] = os.environ,
        backoff: float = 0.2,
    ) -> None:
        self.endpoint = endpoint or resolve_endpoint(environ)
        url = urllib.parse.urlsplit(self.endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"OTLP/HTTP endpoint must be an http(s) URL, got {self.endpoint!r}")
        self._scheme, self._host = url.scheme, url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self.timeout = timeout if timeout is not None else resolve_timeout(environ)
        self.compression = resolve_compression(environ, compression)
        self.headers = {"content-type": "application/x-protobuf", "user-agent": USER_AGENT}
        specific = (environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or "").strip()
        variable = "OTEL_EXPORTER_OTLP_TRACES_HEADERS" if specific else "OTEL_EXPORTER_OTLP_HEADERS"
        self.headers.update(parse_headers(_env(environ, "HEADERS"), variable=variable))
        self.headers.update({k.lower(): v for k, v in (headers or {}).items()})
        if self.compression in ("gzip", "deflate"):
            self.headers.setdefault("content-encoding", self.compression)
        self._head = request_head(
            path=self._path,
            host=self._host,
            port=self._port,
            default_port=443 if self._scheme == "https" else 80,
            headers=self.headers,
        )
        self._ssl_context = None
        self._fatal_errors: tuple[type[Exception], ...] = ()  # not worth a retry
        if self._scheme == "https":
            import ssl  # only for https

            from proxy.system_trust import system_trust_context

            self._fatal_errors = (ssl.SSLCertVerificationError,)
            ca_file = certificate_file or _env(environ, "CERTIFICATE")
            self._ssl_context = ssl.create_default_context(cafile=ca_file) if ca_file else system_trust_context()
            client_cert = client_certificate_file or _env(environ, "CLIENT_CERTIFICATE")
            if client_cert:
                self._ssl_context.load_cert_chain(client_cert, client_key_file or _env(environ, "CLIENT_KEY"))
        self._backoff = backoff
        self._encoder = SpanEncoder()
        self._conn: Connection | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._shutdown = threading.Event()
        self._failing = 0  # failed batches in the current streak
        self._rejecting = False  # the collector rejected some spans of the last batch
        self.exported_spans = 0
        self.failed_spans = 0
        self.dropped_spans = 0
        self.requests_sent = 0  # HTTP requests (retries included)
        self.connections_opened = 0

    # -- SpanExporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Encode and post SDK ReadableSpans (MODELWAY_TRACER=sdk: the BatchSpanProcessor's batches; the
        lean recorder's queue posts spans encoded as they ended, by ``export_encoded``)."""
        if self._shutdown.is_set():
            self.dropped_spans += len(spans)
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        with self._lock:
            try:
                body = self._encoder.encode(spans)
            except Exception as exc:  # a bug or a span we cannot encode: lose the batch, not the thread
                return self._failed(len(spans), f"encoding failed: {exc!r}")
            return self._export_locked(body, len(spans))

    def export_encoded(self, body: Buffer | Sequence[Buffer], count: int) -> SpanExportResult:
        """Post an already-encoded ExportTraceServiceRequest holding ``count`` spans: bytes, or its
        parts in order (``proxy.telemetry.span_queue``'s batches), sent as they are."""
        if self._shutdown.is_set():
            self.dropped_spans += count
            return SpanExportResult.FAILURE
        if not count:
            return SpanExportResult.SUCCESS
        with self._lock:
            return self._export_locked(body, count)

    def _export_locked(self, body: Buffer | Sequence[Buffer], count: int) -> SpanExportResult:
        parts: Sequence[Buffer] = (body,) if isinstance(body, (bytes, bytearray, memoryview)) else body
        if self.compression in ("gzip", "deflate"):
            import zlib

            # wbits 16+15: the gzip container; else zlib's, as zlib.compress writes
            c = zlib.compressobj(6, zlib.DEFLATED, 31) if self.compression == "gzip" else zlib.compressobj()
            parts = (b"".join([*map(c.compress, parts), c.flush()]),)
        try:
            error, rejected = self._send(parts)
        except Exception as exc:  # never raise into the BatchSpanProcessor
            error, rejected = f"unexpected {exc!r}", 0
        if error is not None:
            return self._failed(count, error)
        if self._failing:
            log.info("OTLP export to %s works again after %d failed batches", self.endpoint, self._failing)
            self._failing = 0
        self.exported_spans += count - rejected
        if rejected:
            self.failed_spans += rejected
        return SpanExportResult.SUCCESS

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        self._shutdown.set()  # interrupts a retry wait
        if self._lock.acquire(timeout=max(timeout_millis, 0) / 1000):
            try:
                self._close()
            finally:
                self._lock.release()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # nothing is buffered here

    # -- internals

    def _failed(self, count: int, reason: str) -> SpanExportResult:
        self.failed_spans += count
        if not self._failing:
            log.warning(
                "OTLP export to %s failed: %s; %d spans lost (further failures are not logged "
                "until an export succeeds)",
                self.endpoint,
                reason,
                count,
            )
        self._failing += 1
        return SpanExportResult.FAILURE

    def _send(self, body: Sequence[Buffer]) -> tuple[str | None, int]:
        """POST with retries bounded by the timeout: (error or None, rejected spans)."""
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timed out", 0
            retry_after: float | None = None
            try:
                status, reason, headers, payload = self._post(body, remaining)
            except (OSError, http.client.HTTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, self._fatal_errors):
                    return error, 0
            else:
                if 200 <= status < 300:
                    return None, self._partial_success(payload)
                error = f"HTTP {status} {reason}"
                if status not in RETRYABLE_STATUSES:
                    return error, 0
                retry_after = _retry_after(headers.get("retry-after"))
            delay = retry_after if retry_after is not None else self._backoff * (2**attempt) * random.uniform(0.8, 1.2)
            if time.monotonic() + delay >= deadline:
                return f"{error} (gave up after {attempt + 1} attempts)", 0
            if self._shutdown.wait(delay):
                return f"{error} (shutting down)", 0
            attempt += 1

    def _post(self, body: Sequence[Buffer], timeout: float) -> tuple[int, str, Mapping[str, str], bytes]:
        """One request; a kept-alive connection that turns out stale is replaced once, at once."""
        if self._pid != os.getpid():  # forked: the socket belongs to the parent
            self._conn, self._pid = None, os.getpid()
        reused = self._conn is not None
        try:
            return self._request(body, timeout)
        except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine) as exc:
            self._close()
            if not reused:
                raise
            log.debug("OTLP: kept-alive connection dropped (%s); reconnecting", exc)
            return self._request(body, timeout)
        except BaseException:
            self._close()
            raise

    def _request(self, body: Sequence[Buffer], timeout: float) -> tuple[int, str, Mapping[str, str], bytes]:
        conn = self._conn
        if conn is None:
            conn = Connection.open(self._host, self._port, timeout=timeout, context=self._ssl_context)
            self._conn = conn
            self.connections_opened += 1
        else:
            conn.sock.settimeout(timeout)
        self.requests_sent += 1
        status, reason, headers, payload, closes = conn.post(self._head, body)
        if closes:
            self._close()
        return status, reason, headers, payload

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()

    def _partial_success(self, payload: bytes) -> int:
        """Spans the collector rejected, from ExportTraceServiceResponse.partial_success (1):
        rejected_spans (1), error_message (2). Logged once until a batch is taken whole."""
        try:
            partial = decode_fields(payload).get(1) if payload else None
            fields = decode_fields(partial) if isinstance(partial, bytes) else {}
        except (IndexError, ValueError):
            fields = {}  # not protobuf (a proxy's page?): the status said success
        rejected = fields.get(1, 0)
        rejected = rejected if isinstance(rejected, int) and rejected < 1 << 63 else 0
        if not rejected:
            self._rejecting = False
            return 0
        if not self._rejecting:
            message = fields.get(2, b"")
            text = message.decode(errors="replace") if isinstance(message, bytes) else ""
            log.warning(
                "OTLP collector at %s rejected %d spans: %s (not logged again until a batch is taken whole)",
                self.endpoint,
                rejected,
                text,
            )
            self._rejecting = True
        return rejected


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # HTTP-date form: use our own backoff
    return max(seconds, 0.0)
