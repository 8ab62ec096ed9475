"""A lean OTLP/HTTP (protobuf) span exporter for the sidecar.

The stock ``opentelemetry-exporter-otlp-proto-http`` builds a protobuf object
tree per span (tens of µs of Python per span) and posts it with ``requests``
(~5 MiB RSS just to import). Here the ``ExportTraceServiceRequest`` is written
by hand as bytes (field numbers from opentelemetry-proto
``opentelemetry/proto/trace/v1/trace.proto`` and ``common/v1/common.proto``),
and it is posted with the standard library's ``http.client`` on a kept-alive
connection. A test keeps the bytes equal to the official encoder's message.

Export runs in the BatchSpanProcessor's worker thread, never on the event loop.
It never raises: a failed batch is counted, logged once per streak of failures,
and reported as ``SpanExportResult.FAILURE``.

Configuration follows the OTLP exporter spec's variables (``environ``):
``OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT``, ``_HEADERS``, ``_TIMEOUT`` (ms),
``_COMPRESSION`` (gzip, deflate, none), ``_CERTIFICATE``, ``_CLIENT_KEY``,
``_CLIENT_CERTIFICATE``. HTTP(S) proxies from the environment are not used.
"""

from __future__ import annotations

import http.client
import logging
import os
import random
import struct
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
DEFAULT_TIMEOUT = 10.0  # seconds
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
USER_AGENT = "modelway-otlp-exporter/0.1 (OTLP/HTTP protobuf; Python)"
_CACHE_MAX = 4096  # encoded (key, str value) pairs kept; cleared when full

# ---------------------------------------------------------------------------
# protobuf encoding
#
# Each message is built as a list of byte chunks joined once; a nested message
# is "tag, varint(len), body". Tags are (field_number << 3) | wire_type, with
# wire types 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.

_VARINT1 = tuple(bytes((i,)) for i in range(128))
_pack_double = struct.Struct("<d").pack
_pack_fixed32 = struct.Struct("<I").pack
_pack_times = struct.Struct("<BQBQ").pack  # Span.start_time_unix_nano (7), end_time_unix_nano (8)
_pack_fixed64 = struct.Struct("<Q").pack
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_UINT64_MASK = (1 << 64) - 1

# Span.flags (16, fixed32): bit 8 "has is_remote", bit 9 "is_remote" of the parent (as the SDK's encoder).
_FLAGS_LOCAL_PARENT = b"\x85\x01" + _pack_fixed32(0x100)
_FLAGS_REMOTE_PARENT = b"\x85\x01" + _pack_fixed32(0x300)
_KIND = tuple(b"\x30" + _VARINT1[k + 1] for k in range(5))  # SDK SpanKind 0..4 -> proto SPAN_KIND_* 1..5


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _VARINT1[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, body: bytes) -> bytes:
    """A length-delimited field: tag, length, body."""
    n = len(body)
    return tag + (_VARINT1[n] if n < 0x80 else _varint(n)) + body


def _lp(body: bytes) -> bytes:
    """Length prefix + body (the tag is added by the caller)."""
    n = len(body)
    return (_VARINT1[n] if n < 0x80 else _varint(n)) + body


def _int64(value: int) -> bytes:
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"integer {value} does not fit in int64")
    return _varint(value & _UINT64_MASK)


def _any_value(value: Any) -> bytes:
    """The body of an AnyValue: string 1, bool 2, int 3, double 4, array 5, kvlist 6, bytes 7."""
    t = type(value)
    if t is str:
        return _field(b"\x0a", value.encode(errors="replace"))
    if t is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if t is int:
        return b"\x18" + _int64(value)
    if t is float:
        return b"\x21" + _pack_double(value)
    # Subclasses and containers, in the order the SDK's encoder tests them.
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", str(value).encode(errors="replace"))
    if isinstance(value, int):
        return b"\x18" + _int64(int(value))
    if isinstance(value, float):
        return b"\x21" + _pack_double(float(value))
    if isinstance(value, bytes):
        return _field(b"\x3a", bytes(value))
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join([b"\x0a" + _lp(_any_value(v)) for v in value]))
    if isinstance(value, Mapping):
        return _field(b"\x32", b"".join([b"\x0a" + _lp(_key_value(str(k), v)) for k, v in value.items()]))
    raise TypeError(f"invalid attribute value type {type(value).__name__}")


def _key_value(key: str, value: Any) -> bytes:
    """The body of a KeyValue: key 1, value 2 (always present, as in the SDK's encoder)."""
    return (_field(b"\x0a", key.encode(errors="replace")) if key else b"") + _field(b"\x12", _any_value(value))


class SpanEncoder:
    """Encodes SDK spans into ExportTraceServiceRequest bytes.

    Resources and instrumentation scopes are encoded once each and their bytes
    cached; spans are grouped by them in first-seen order, as the SDK's
    encoder does. Not thread-safe: one per exporter, used under its lock.
    """

    def __init__(self) -> None:
        self._kv_cache: dict[tuple[str, str], bytes] = {}  # (key, str value) -> length-prefixed KeyValue
        self._names: dict[str, bytes] = {}  # span/event name -> length-prefixed UTF-8
        self._resources: dict[int, tuple[object, bytes, bytes]] = {}  # id -> (obj, field 1, field 3)
        self._scopes: dict[int, tuple[object, bytes, bytes]] = {}

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        # resource bytes -> scope bytes -> encoded spans; bytes as keys group equal resources/scopes.
        groups: dict[tuple[bytes, bytes], dict[tuple[bytes, bytes], list[bytes]]] = {}
        for span in spans:
            resource = self._resource(span.resource)
            scope = self._scope(span.instrumentation_scope)
            scopes = groups.get(resource)
            if scopes is None:
                scopes = groups[resource] = {}
            encoded = scopes.get(scope)
            if encoded is None:
                encoded = scopes[scope] = []
            encoded.append(b"\x12" + _lp(self.encode_span(span)))  # ScopeSpans.spans (2)
        out = []
        for (resource_field, resource_schema), scopes in groups.items():
            scope_spans = [
                b"\x12" + _lp(b"".join([scope_field, *encoded, scope_schema]))  # ResourceSpans.scope_spans (2)
                for (scope_field, scope_schema), encoded in scopes.items()
            ]
            body = b"".join([resource_field, *scope_spans, resource_schema])
            out.append(b"\x0a" + _lp(body))  # ExportTraceServiceRequest.resource_spans (1)
        return b"".join(out)

    def _resource(self, resource: Any) -> tuple[bytes, bytes]:
        cached = self._resources.get(id(resource))
        if cached is None or cached[0] is not resource:
            if len(self._resources) > 64:
                self._resources.clear()
            attrs = b"".join(self._attributes(b"\x0a", resource.attributes)) if resource is not None else b""
            schema = getattr(resource, "schema_url", "") or ""
            cached = (resource, _field(b"\x0a", attrs), _field(b"\x1a", schema.encode()) if schema else b"")
            self._resources[id(resource)] = cached
        return cached[1], cached[2]

    def _scope(self, scope: Any) -> tuple[bytes, bytes]:
        cached = self._scopes.get(id(scope))
        if cached is None or cached[0] is not scope:
            if len(self._scopes) > 64:
                self._scopes.clear()
            body, schema = b"", ""
            if scope is not None:  # InstrumentationScope: name 1, version 2, attributes 3
                parts = [_field(b"\x0a", scope.name.encode())] if scope.name else []
                if scope.version:
                    parts.append(_field(b"\x12", scope.version.encode()))
                parts.extend(self._attributes(b"\x1a", scope.attributes))
                body, schema = b"".join(parts), scope.schema_url or ""
            cached = (scope, _field(b"\x0a", body), _field(b"\x1a", schema.encode()) if schema else b"")
            self._scopes[id(scope)] = cached
        return cached[1], cached[2]

    def _attributes(self, tag: bytes, attributes: Mapping[str, Any] | None) -> list[bytes]:
        """``tag + length-prefixed KeyValue`` chunks; an unencodable attribute is skipped (and logged)."""
        if not attributes:
            return []
        cache = self._kv_cache
        out = []
        for key, value in attributes.items():
            is_str = type(value) is str
            kv = cache.get((key, value)) if is_str else None
            if kv is None:
                try:
                    kv = _lp(_key_value(key, value))
                except Exception as exc:  # as the SDK's encoder: drop the attribute, keep the span
                    log.warning("OTLP: attribute %r not encoded: %s", key, exc)
                    continue
                if is_str:
                    if len(cache) >= _CACHE_MAX:
                        cache.clear()
                    cache[(key, value)] = kv
            out.append(tag)
            out.append(kv)
        return out

    def _name(self, name: str) -> bytes:
        encoded = self._names.get(name)
        if encoded is None:
            if len(self._names) >= 1024:
                self._names.clear()
            encoded = self._names[name] = _lp(name.encode(errors="replace"))
        return encoded

    def encode_span(self, span: ReadableSpan) -> bytes:
        """The body of one Span message (trace.proto field numbers in the comments)."""
        ctx = span.context
        parts = [b"\x0a\x10", ctx.trace_id.to_bytes(16, "big"), b"\x12\x08", ctx.span_id.to_bytes(8, "big")]
        trace_state = ctx.trace_state
        if trace_state:  # 3
            parts += (b"\x1a", _lp(",".join([f"{k}={v}" for k, v in trace_state.items()]).encode()))
        parent = span.parent
        if parent is not None:  # 4
            parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
        if span.name:  # 5
            parts += (b"\x2a", self._name(span.name))
        parts.append(_KIND[span.kind.value])  # 6
        start, end = span.start_time, span.end_time
        if start and end:  # 7, 8
            parts.append(_pack_times(0x39, start, 0x41, end))
        elif start:
            parts.append(b"\x39" + _pack_fixed64(start))
        elif end:
            parts.append(b"\x41" + _pack_fixed64(end))
        parts += self._attributes(b"\x4a", span.attributes)  # 9
        if dropped := span.dropped_attributes:  # 10
            parts += (b"\x50", _varint(dropped))
        for event in span.events:  # 11: time 1, name 2, attributes 3, dropped 4
            body = [b"\x09", _pack_fixed64(event.timestamp)] if event.timestamp else []
            if event.name:
                body += (b"\x12", self._name(event.name))
            body += self._attributes(b"\x1a", event.attributes)
            if dropped := event.dropped_attributes:
                body += (b"\x20", _varint(dropped))
            parts += (b"\x5a", _lp(b"".join(body)))
        if dropped := span.dropped_events:  # 12
            parts += (b"\x60", _varint(dropped))
        for link in span.links:  # 13: trace_id 1, span_id 2, attributes 4, dropped 5, flags 6
            lctx = link.context
            body = [b"\x0a\x10", lctx.trace_id.to_bytes(16, "big"), b"\x12\x08", lctx.span_id.to_bytes(8, "big")]
            body += self._attributes(b"\x22", link.attributes)
            if dropped := link.dropped_attributes:
                body += (b"\x28", _varint(dropped))
            body += (b"\x35", _pack_fixed32(0x300 if lctx.is_remote else 0x100))
            parts += (b"\x6a", _lp(b"".join(body)))
        if dropped := span.dropped_links:  # 14
            parts += (b"\x70", _varint(dropped))
        status = span.status  # 15: message 2, code 3
        if status is not None:
            code, message = status.status_code.value, status.description
            if message:
                body_s = _field(b"\x12", message.encode()) + (b"\x18" + _VARINT1[code] if code else b"")
                parts += (b"\x7a", _lp(body_s))
            else:
                parts.append((b"\x7a\x00", b"\x7a\x02\x18\x01", b"\x7a\x02\x18\x02")[code])
        parts.append(_FLAGS_REMOTE_PARENT if parent is not None and parent.is_remote else _FLAGS_LOCAL_PARENT)  # 16
        return b"".join(parts)


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """ExportTraceServiceRequest bytes for ``spans`` (a fresh encoder: no caches kept)."""
    return SpanEncoder().encode(spans)


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


def parse_headers(value: str | None) -> dict[str, str]:
    """``k1=v1,k2=v2`` (W3C Baggage-like, URL-encoded); keys lower-cased, bad items skipped."""
    headers: dict[str, str] = {}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        key = urllib.parse.unquote(key).strip().lower()
        if not sep or not key:
            log.warning("OTLP: ignoring malformed header item %r", item.strip())
            continue
        headers[key] = urllib.parse.unquote(val).strip()
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


def resolve_compression(environ: Mapping[str, str]) -> str:
    value = (_env(environ, "COMPRESSION") or "none").lower()
    if value not in ("gzip", "deflate", "none"):
        log.warning("OTLP: unsupported compression %r; sending uncompressed", value)
        return "none"
    return value


# ---------------------------------------------------------------------------
# the exporter


class OTLPHttpSpanExporter(SpanExporter):
    """OTLP/HTTP protobuf span exporter on ``http.client`` (see the module docstring).

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
        self.compression = (compression or resolve_compression(environ)).lower()
        self.headers = {"content-type": "application/x-protobuf", "user-agent": USER_AGENT}
        self.headers.update(parse_headers(_env(environ, "HEADERS")))
        self.headers.update({k.lower(): v for k, v in (headers or {}).items()})
        if self.compression in ("gzip", "deflate"):
            self.headers.setdefault("content-encoding", self.compression)
        self._ssl_context = None
        if self._scheme == "https":
            import ssl  # only for https

            self._ssl_context = ssl.create_default_context(cafile=certificate_file or _env(environ, "CERTIFICATE"))
            client_cert = client_certificate_file or _env(environ, "CLIENT_CERTIFICATE")
            if client_cert:
                self._ssl_context.load_cert_chain(client_cert, client_key_file or _env(environ, "CLIENT_KEY"))
        self._backoff = backoff
        self._encoder = SpanEncoder()
        self._conn: http.client.HTTPConnection | None = None
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
            if self.compression == "gzip":
                import zlib

                c = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 16+15: gzip container
                body = c.compress(body) + c.flush()
            elif self.compression == "deflate":
                import zlib

                body = zlib.compress(body)
            try:
                error, rejected = self._send(body)
            except Exception as exc:  # never raise into the BatchSpanProcessor
                error, rejected = f"unexpected {exc!r}", 0
            if error is not None:
                return self._failed(len(spans), error)
            if self._failing:
                log.info("OTLP export to %s works again after %d failed batches", self.endpoint, self._failing)
                self._failing = 0
            self.exported_spans += len(spans) - rejected
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
            log.warning("OTLP export to %s failed: %s; %d spans lost (further failures are not logged "
                        "until an export succeeds)", self.endpoint, reason, count)
        self._failing += 1
        return SpanExportResult.FAILURE

    def _send(self, body: bytes) -> tuple[str | None, int]:
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

    def _post(self, body: bytes, timeout: float) -> tuple[int, str, http.client.HTTPMessage, bytes]:
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

    def _request(self, body: bytes, timeout: float) -> tuple[int, str, http.client.HTTPMessage, bytes]:
        conn = self._conn
        if conn is None:
            if self._ssl_context is not None:
                conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._ssl_context)
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            conn.connect()
            self._conn = conn
            self.connections_opened += 1
        elif conn.sock is not None:
            conn.sock.settimeout(timeout)
        self.requests_sent += 1
        conn.request("POST", self._path, body=body, headers=self.headers)
        response = conn.getresponse()
        payload = response.read()  # drain it so the connection can be reused
        if response.will_close:
            self._close()
        return response.status, response.reason, response.headers, payload

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass

    def _partial_success(self, payload: bytes) -> int:
        """Spans the collector rejected, from ExportTraceServiceResponse.partial_success (1):
        rejected_spans (1), error_message (2). Logged once until a batch is taken whole."""
        try:
            partial = _fields(payload).get(1) if payload else None
            fields = _fields(partial) if isinstance(partial, bytes) else {}
        except (IndexError, ValueError):
            fields = {}  # not protobuf (a proxy's page?): the status said success
        rejected = fields.get(1, 0)
        rejected = rejected if isinstance(rejected, int) and rejected < _INT64_MAX else 0
        if not rejected:
            self._rejecting = False
            return 0
        if not self._rejecting:
            message = fields.get(2, b"")
            text = message.decode(errors="replace") if isinstance(message, bytes) else ""
            log.warning("OTLP collector at %s rejected %d spans: %s (not logged again until a batch is "
                        "taken whole)", self.endpoint, rejected, text)
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


def _fields(data: bytes) -> dict[int, int | bytes]:
    """A flat decode of one protobuf message: field number -> last value (varint or bytes)."""
    out: dict[int, int | bytes] = {}
    i, n = 0, len(data)
    while i < n:
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            out[number], i = _read_varint(data, i)
        elif wire == 2:
            length, i = _read_varint(data, i)
            if i + length > n:
                raise ValueError("truncated")
            out[number], i = data[i:i + length], i + length
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"wire type {wire}")
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")
