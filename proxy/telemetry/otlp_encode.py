"""OTLP trace protobuf, written and read by hand (pure: no I/O).

The stock encoder builds a protobuf object tree per span (~90 µs of Python per
sidecar span); here an ``ExportTraceServiceRequest`` is written directly as
bytes (field numbers from opentelemetry-proto ``trace/v1/trace.proto`` and
``common/v1/common.proto``). A test keeps the bytes equal to the official
encoder's message.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from proxy.telemetry.lean_span import UNSET_STATUS, LeanSpan, SharedAttributes
from proxy.telemetry.otlp_wire import (
    UINT64_MASK,
    VARINT1,
    any_value,
    delimited,
    int64,
    key_value,
    lp,
    pack_double,
    pack_fixed32,
    varint,
)

if TYPE_CHECKING:  # the SDK is imported only where it is used (MODELWAY_TRACER=sdk, gRPC)
    from opentelemetry.sdk.trace import ReadableSpan

log = logging.getLogger("proxy.telemetry.otlp_export")

Buffer = bytes | bytearray | memoryview  # a message's parts: bytes, or views of a batch's spans encoded into buffers
_CACHE_MAX = 4096  # entries per encoder cache (KeyValues, keys); a full cache is cleared
# What is worth caching, and not kept for long otherwise: a (key, str or tuple) KeyValue up to this many
# bytes (model names, backends, finish reasons repeat; prompt text, captured on request, and stack traces
# do not, and are not kept), and this many (key, int) KeyValues (status codes repeat; token counts mostly
# do not: 4096 of them kept ~0.75 MiB in each sidecar).
_CACHED_KV_BYTES = 128
_INT_CACHE_MAX = 256
_UNSET: Any = object()

# protobuf writing (`proxy.telemetry.otlp_wire`): each message a list of chunks joined once
_pack_times = struct.Struct("<BQBQ").pack  # Span.start_time_unix_nano (7), end_time_unix_nano (8)
_pack_fixed64 = struct.Struct("<Q").pack
# Span.trace_id (1) and span_id (2), and parent_span_id (4): tags and ids in one call (ids big-endian,
# the 128-bit trace id as two halves)
_pack_ids = struct.Struct(">HQQHQ").pack
_pack_ids_parent = struct.Struct(">HQQHQHQ").pack
# Span.flags (16, fixed32): bit 8 "has is_remote", bit 9 "is_remote" of the parent (as the SDK's encoder).
_FLAGS_LOCAL_PARENT = b"\x85\x01" + pack_fixed32(0x100)
_FLAGS_REMOTE_PARENT = b"\x85\x01" + pack_fixed32(0x300)
# Span.status (15) unset, then the flags: the end of most lean spans.
_UNSET_LOCAL_PARENT, _UNSET_REMOTE_PARENT = b"\x7a\x00" + _FLAGS_LOCAL_PARENT, b"\x7a\x00" + _FLAGS_REMOTE_PARENT
_KIND = tuple(b"\x30" + VARINT1[k + 1] for k in range(5))  # SDK SpanKind 0..4 -> proto SPAN_KIND_* 1..5
_KIND_BY_ID = {id(kind): _KIND[kind.value] for kind in SpanKind}
_CODE_BY_ID = {id(code): code.value for code in StatusCode}


class SpanEncoder:
    """Encodes SDK spans into ExportTraceServiceRequest bytes (``encode``), and the lean recorder's
    spans one by one as they end (``lean_span_field``), to be sent later as one request
    (``lean_request``).

    Resources and instrumentation scopes are encoded once each and their bytes
    cached; spans are grouped by them in first-seen order, as the SDK's
    encoder does. Not thread-safe: one per exporter, used under its lock; one per lean span queue
    for the spans ended (on the event loop), another for its export thread's requests.
    """

    def __init__(self) -> None:
        self._kv_cache: dict[tuple[str, str], bytes] = {}  # (key, str value) -> length-prefixed KeyValue
        self._keys: dict[str, bytes] = {}  # attribute key -> KeyValue.key field
        self._ints: dict[tuple[str, int], bytes] = {}  # (key, int value) -> length-prefixed KeyValue
        self._names: dict[str, bytes] = {}  # span/event name -> length-prefixed UTF-8
        self._heads: dict[tuple[str, int], bytes] = {}  # (name, id(kind)) -> Span fields 5 and 6
        # A lean span's own attributes: (key, str or tuple of str) and (key, int) -> its Span.attributes field,
        # tag included; key -> a double's field up to the double.
        self._own_strs: dict[tuple[str, Any], bytes] = {}
        self._own_ints: dict[tuple[str, int], bytes] = {}
        self._own_floats: dict[str, bytes] = {}
        self._resources: dict[int, tuple[object, bytes, bytes]] = {}  # id -> (obj, field 1, field 3)
        self._scopes: dict[int, tuple[object, bytes, bytes]] = {}

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """An ExportTraceServiceRequest of SDK spans (the lean recorder's are encoded as they end:
        ``lean_span_field``, ``lean_request``)."""
        # resource bytes -> scope bytes -> encoded spans; bytes as keys group equal resources/scopes.
        groups: dict[tuple[bytes, bytes], dict[tuple[bytes, bytes], list[Buffer]]] = {}
        last_resource: Any = _UNSET
        last_scope: Any = _UNSET
        encoded: list[Buffer] = []
        for span in spans:
            resource, scope = span.resource, span.instrumentation_scope
            if resource is not last_resource or scope is not last_scope:  # usually one of each for all
                last_resource, last_scope = resource, scope
                scopes = groups.setdefault(self._resource(resource), {})
                encoded = scopes.setdefault(self._scope(scope), [])
            body = self.encode_span(span)
            encoded += (span_field_head(len(body)), body)  # ScopeSpans.spans (2): tag, length, body
        return b"".join(_request(groups))

    def lean_span_field(self, span: LeanSpan) -> bytes:
        """A ``proxy.telemetry.lean_span.LeanSpan``, ended, as a ScopeSpans.spans field (tag, length,
        the Span message), read from its slots: the same Span message as ``encode_span``'s.

        Run for every span on the event loop, so in one frame with the common cases inline: ids,
        name, kind and times in a few calls, the shared attributes' bytes from the cache, and each
        of the span's own attributes (most of a span's cost) as one cached field where it repeats
        (strings, ints) or a cached head and its 8 bytes (floats)."""
        # SpanContexts as the tuples they are: (trace_id, span_id, is_remote, flags, trace_state, is_valid)
        trace_id, span_id, _, _, trace_state, _ = span.context
        parent = span.parent
        if trace_state is not DEFAULT_TRACE_STATE and trace_state:  # 1, 2, 3 (the trace state), 4
            ids = _ids_with_state(trace_id, span_id, trace_state, parent)
        elif parent is None:  # 1, 2 (4: none), tags and ids in one call
            ids = _pack_ids(0x0A10, trace_id >> 64, trace_id & UINT64_MASK, 0x1208, span_id)
        else:
            ids = _pack_ids_parent(0x0A10, trace_id >> 64, trace_id & UINT64_MASK, 0x1208, span_id, 0x2208, parent[1])
        name, kind = span.name, span.kind  # 5, 6: their bytes made once per name and kind
        head = self._heads.get((name, id(kind)))
        if head is None:
            head = self._head(name, kind)
        shared = span.shared  # 9: the shared attributes' bytes (made once, kept with them), then the span's own
        shared_fields = b"" if shared is None else shared.encoded or self._shared_fields(shared)
        # 7, 8 (both set once ended) between the head and the attributes
        parts = [ids, head, _pack_times(0x39, span.start_time, 0x41, span.end_time), shared_fields]
        own = span.own
        if own:
            append, strs, ints, floats = parts.append, self._own_strs, self._own_ints, self._own_floats
            for key, value in own.items():
                t = type(value)
                if t is str or t is tuple:
                    field = strs.get((key, value))
                elif t is int:  # (never a bool: (k, 1) == (k, True))
                    field = ints.get((key, value))
                elif t is float and (field := floats.get(key)) is not None:
                    append(field + pack_double(value))  # the KeyValue's length is the same for every double
                    continue
                else:
                    field = None
                append(field if field is not None else self._own_field(key, value))
        rare = span._rare  # events, links and dropped counts, on few spans
        if rare is not None:
            self._rare_fields(parts, rare)
        remote = parent is not None and parent[2]
        if span.status is UNSET_STATUS:  # 15 and 16 in one piece
            parts.append(_UNSET_REMOTE_PARENT if remote else _UNSET_LOCAL_PARENT)
        else:
            parts += (_status(span.status), _FLAGS_REMOTE_PARENT if remote else _FLAGS_LOCAL_PARENT)
        body = b"".join(parts)  # (joined once: summing the lengths of the parts costs more)
        n = len(body)
        # (most spans: a two-byte length, made here rather than by span_field_head)
        return (bytes((0x12, (n & 0x7F) | 0x80, n >> 7)) if 0x80 <= n < 0x4000 else span_field_head(n)) + body

    def _own_field(self, key: str, value: Any) -> bytes:
        """One of a lean span's own attributes as a Span.attributes field, tag included (b"" when it
        cannot be encoded: skipped and logged, as the SDK's encoder does), kept in the caches
        ``lean_span_field`` reads when it is worth it (as ``_attributes`` keeps its KeyValues)."""
        try:
            t = type(value)
            if t is float:  # kept: the field up to the double
                key_field = delimited(b"\x0a", key.encode(errors="replace")) if key else b""
                head = b"\x4a" + varint(len(key_field) + 11) + key_field + b"\x12\x09\x21"
                if len(self._own_floats) >= _CACHE_MAX:
                    self._own_floats.clear()
                self._own_floats[key] = head
                return head + pack_double(value)
            field = b"\x4a" + lp(key_value(key, value))
        except Exception as exc:  # as the SDK's encoder: drop the attribute, keep the span
            log.warning("OTLP: attribute %r not encoded: %s", key, exc)
            return b""
        if t is int:  # status codes repeat; token counts mostly do not: a small cache, cleared when full
            if len(self._own_ints) >= _INT_CACHE_MAX:
                self._own_ints.clear()
            self._own_ints[(key, value)] = field
        elif (t is str or (t is tuple and all(type(v) is str or v is None for v in value))) and len(
            field
        ) <= _CACHED_KV_BYTES + 1:  # (tuples of strings only: (k, (1,)) == (k, (True,)))
            if len(self._own_strs) >= _CACHE_MAX:
                self._own_strs.clear()
            self._own_strs[(key, value)] = field
        return field

    def lean_request(self, resource: Any, scopes: Mapping[Any, Sequence[Buffer]]) -> list[Buffer]:
        """An ExportTraceServiceRequest, in parts to send as they are (not joined), of lean spans
        already encoded (``lean_span_field``): ``scopes`` maps each InstrumentationScope (a
        ``proxy.telemetry.sampling.LeanScope``) to its spans' fields (in buffers, in order), all
        under ``resource``."""
        groups: dict[tuple[bytes, bytes], list[Buffer]] = {}
        for scope, fields in scopes.items():
            groups.setdefault(self._scope(scope), []).extend(fields)  # equal scopes' spans in one group
        return _request({self._resource(resource): groups})

    def _resource(self, resource: Any) -> tuple[bytes, bytes]:
        cached = self._resources.get(id(resource))
        if cached is None or cached[0] is not resource:
            if len(self._resources) > 64:
                self._resources.clear()
            attrs: list[bytes] = []
            if resource is not None:
                self._attributes(attrs, b"\x0a", resource.attributes)
            schema = getattr(resource, "schema_url", "") or ""
            schema_field = delimited(b"\x1a", schema.encode()) if schema else b""
            cached = (resource, delimited(b"\x0a", b"".join(attrs)), schema_field)
            self._resources[id(resource)] = cached
        return cached[1], cached[2]

    def _scope(self, scope: Any) -> tuple[bytes, bytes]:
        cached = self._scopes.get(id(scope))
        if cached is None or cached[0] is not scope:
            if len(self._scopes) > 64:
                self._scopes.clear()
            body, schema = b"", ""
            if scope is not None:  # InstrumentationScope: name 1, version 2, attributes 3
                parts = [delimited(b"\x0a", scope.name.encode())] if scope.name else []
                if scope.version:
                    parts.append(delimited(b"\x12", scope.version.encode()))
                self._attributes(parts, b"\x1a", scope.attributes)
                body, schema = b"".join(parts), scope.schema_url or ""
            cached = (scope, delimited(b"\x0a", body), delimited(b"\x1a", schema.encode()) if schema else b"")
            self._scopes[id(scope)] = cached
        return cached[1], cached[2]

    def _attributes(self, out: list[bytes], tag: bytes, attributes: Mapping[str, Any] | None) -> None:
        """Append ``tag, length-prefixed KeyValue`` per attribute; an unencodable one is skipped and logged.

        The hot loop of the encoder, so common cases are inlined: a (key, str value) pair's
        KeyValue is cached whole; for other scalars only the key's field is cached.
        """
        if not attributes:
            return
        kv_cache, key_cache, int_cache = self._kv_cache, self._keys, self._ints
        for key, value in attributes.items():
            try:
                t = type(value)
                if t is str or t is tuple:  # the SDK keeps sequences as tuples
                    kv = kv_cache.get((key, value))
                    if kv is None:
                        kv = lp(key_value(key, value))
                        # Tuples only when all str: (k, (1,)) == (k, (True,)) must not share an entry.
                        if len(kv) <= _CACHED_KV_BYTES and (
                            t is str or all(type(v) is str or v is None for v in value)
                        ):
                            if len(kv_cache) >= _CACHE_MAX:
                                kv_cache.clear()
                            kv_cache[(key, value)] = kv
                else:
                    kf = key_cache.get(key)
                    if kf is None:
                        if len(key_cache) >= _CACHE_MAX:
                            key_cache.clear()
                        kf = key_cache[key] = delimited(b"\x0a", key.encode(errors="replace")) if key else b""
                    if t is int:  # KeyValue.value (2) = AnyValue{int_value (3)}
                        kv = int_cache.get((key, value))  # ports, status codes, attempt numbers repeat
                        if kv is None:
                            v = VARINT1[value] if 0 <= value < 0x80 else int64(value)
                            body = kf + b"\x12" + VARINT1[len(v) + 1] + b"\x18" + v
                            kv = (VARINT1[len(body)] if len(body) < 0x80 else varint(len(body))) + body
                            if len(int_cache) >= _INT_CACHE_MAX:
                                int_cache.clear()
                            int_cache[(key, value)] = kv
                        out.append(tag)
                        out.append(kv)
                        continue
                    if t is float:
                        body = kf + b"\x12\x09\x21" + pack_double(value)
                    elif t is bool:
                        body = kf + (b"\x12\x02\x10\x01" if value else b"\x12\x02\x10\x00")
                    else:
                        body = kf + delimited(b"\x12", any_value(value))
                    kv = (VARINT1[len(body)] if len(body) < 0x80 else varint(len(body))) + body
            except Exception as exc:  # as the SDK's encoder: drop the attribute, keep the span
                log.warning("OTLP: attribute %r not encoded: %s", key, exc)
                continue
            out.append(tag)
            out.append(kv)

    def _shared_fields(self, shared: SharedAttributes) -> bytes:
        """Span.attributes fields (tag included) of a proxy.telemetry.lean_span.SharedAttributes, kept
        with it: made once per dict."""
        fields: list[bytes] = []
        self._attributes(fields, b"\x4a", shared)
        shared.encoded = encoded = b"".join(fields)
        return encoded

    def _head(self, name: str, kind: Any) -> bytes:
        """Span.name (5) and kind (6), tags included, for the lean spans' cache."""
        if len(self._heads) >= 1024:
            self._heads.clear()
        head = (b"\x2a" + self._name(name) if name else b"") + (_KIND_BY_ID.get(id(kind)) or _KIND[kind.value])
        self._heads[(name, id(kind))] = head
        return head

    def _name(self, name: str) -> bytes:
        encoded = self._names.get(name)
        if encoded is None:
            if len(self._names) >= 1024:
                self._names.clear()
            encoded = self._names[name] = lp(name.encode(errors="replace"))
        return encoded

    def encode_span(self, span: ReadableSpan) -> bytes:
        """The body of one Span message (trace.proto field numbers in the comments)."""
        ctx = span.context
        parts = [b"\x0a\x10", ctx.trace_id.to_bytes(16, "big"), b"\x12\x08", ctx.span_id.to_bytes(8, "big")]
        trace_state = ctx.trace_state
        if trace_state:  # 3
            parts += (b"\x1a", lp(",".join([f"{k}={v}" for k, v in trace_state.items()]).encode()))
        parent = span.parent
        if parent is not None:  # 4
            parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
        if name := span.name:  # 5
            parts += (b"\x2a", self._name(name))
        kind = span.kind  # 6; Enum.value and Enum.__hash__ are Python-level, id() is not
        parts.append(_KIND_BY_ID.get(id(kind)) or _KIND[kind.value])
        start, end = span.start_time, span.end_time
        if start and end:  # 7, 8
            parts.append(_pack_times(0x39, start, 0x41, end))
        elif start:
            parts.append(b"\x39" + _pack_fixed64(start))
        elif end:
            parts.append(b"\x41" + _pack_fixed64(end))
        self._attributes(parts, b"\x4a", span.attributes)  # 9
        if dropped := span.dropped_attributes:  # 10
            parts += (b"\x50", varint(dropped))
        # The SDK's public views (copies: the escape hatch's path; the lean spans' is lean_span_field).
        if events := span.events:
            for event in events:  # 11: time 1, name 2, attributes 3, dropped 4
                body = [b"\x09", _pack_fixed64(event.timestamp)] if event.timestamp else []
                if event.name:
                    body += (b"\x12", self._name(event.name))
                self._attributes(body, b"\x1a", event.attributes)
                if dropped := event.dropped_attributes:
                    body += (b"\x20", varint(dropped))
                parts += (b"\x5a", lp(b"".join(body)))
            if dropped := span.dropped_events:  # 12
                parts += (b"\x60", varint(dropped))
        if links := span.links:
            for link in links:  # 13: trace_id 1, span_id 2, attributes 4, dropped 5, flags 6
                lctx = link.context
                parts += (b"\x6a", self._link(lctx, link.attributes, link.dropped_attributes))
            if dropped := span.dropped_links:  # 14
                parts += (b"\x70", varint(dropped))
        if span.status is not None:  # 15
            parts.append(_status(span.status))
        parts.append(_FLAGS_REMOTE_PARENT if parent is not None and parent.is_remote else _FLAGS_LOCAL_PARENT)  # 16
        return b"".join(parts)

    def _link(self, lctx: Any, attributes: Any, dropped: int) -> bytes:
        """Span.Link (length-prefixed): trace_id 1, span_id 2, attributes 4, dropped 5, flags 6."""
        body = [b"\x0a\x10", lctx.trace_id.to_bytes(16, "big"), b"\x12\x08", lctx.span_id.to_bytes(8, "big")]
        self._attributes(body, b"\x22", attributes)
        if dropped:
            body += (b"\x28", varint(dropped))
        body += (b"\x35", pack_fixed32(0x300 if lctx.is_remote else 0x100))
        return lp(b"".join(body))

    def _rare_fields(self, parts: list[bytes], rare: Any) -> None:
        """Span fields 10 to 14 of a LeanSpan, from its ``_rare`` record."""
        if dropped := rare.dropped_attributes:  # 10
            parts += (b"\x50", varint(dropped))
        if events := rare.events:  # 11: time 1, name 2, attributes 3, dropped 4
            for name, attributes, timestamp, dropped in events:
                body = [b"\x09", _pack_fixed64(timestamp)] if timestamp else []
                if name:
                    body += (b"\x12", self._name(name))
                self._attributes(body, b"\x1a", attributes)
                if dropped:
                    body += (b"\x20", varint(dropped))
                parts += (b"\x5a", lp(b"".join(body)))
        if dropped := rare.dropped_events:  # 12
            parts += (b"\x60", varint(dropped))
        if links := rare.links:  # 13: trace_id 1, span_id 2, attributes 4, dropped 5, flags 6
            for lctx, attributes, dropped in links:
                parts += (b"\x6a", self._link(lctx, attributes, dropped))
        if dropped := rare.dropped_links:  # 14
            parts += (b"\x70", varint(dropped))


def _status(status: Any) -> bytes:
    """Span.status, tag included: message 2, code 3; the common bare ones are constants."""
    code = _CODE_BY_ID.get(id(status.status_code))
    if code is None:
        code = status.status_code.value
    message = status.description
    if not message and code in (0, 1, 2):
        return (b"\x7a\x00", b"\x7a\x02\x18\x01", b"\x7a\x02\x18\x02")[code]
    body = delimited(b"\x12", message.encode(errors="replace")) if message else b""
    return b"\x7a" + lp(body + (b"\x18" + varint(code) if code else b""))


def _ids_with_state(trace_id: int, span_id: int, trace_state: Any, parent: Any) -> bytes:
    """Span fields 1, 2, 3 (the trace state) and 4 (the parent's span id, if any)."""
    parts = [b"\x0a\x10", trace_id.to_bytes(16, "big"), b"\x12\x08", span_id.to_bytes(8, "big")]
    parts += (b"\x1a", lp(",".join([f"{k}={v}" for k, v in trace_state.items()]).encode()))
    if parent is not None:
        parts += (b"\x22\x08", parent[1].to_bytes(8, "big"))
    return b"".join(parts)


def span_field_head(n: int) -> bytes:
    """The tag and length of a ScopeSpans.spans (2) field of ``n`` bytes."""
    if n < 0x80:
        return b"\x12" + VARINT1[n]
    if n < 0x4000:  # most spans: a two-byte length, made here rather than by varint
        return bytes((0x12, (n & 0x7F) | 0x80, n >> 7))
    return b"\x12" + varint(n)


def _request(groups: Mapping[tuple[bytes, bytes], Mapping[tuple[bytes, bytes], Sequence[Buffer]]]) -> list[Buffer]:
    """An ExportTraceServiceRequest's parts: (resource field, resource schema) -> (scope field, scope
    schema) -> the spans' ScopeSpans.spans fields.

    The nested messages' lengths are summed, not measured on joined bytes: the parts are joined once,
    or sent as they are (a join per level copied every span's bytes four times more)."""
    out: list[Buffer] = []
    for (resource_field, resource_schema), scopes in groups.items():
        heads: list[bytes] = []
        size = len(resource_field) + len(resource_schema)
        for (scope_field, scope_schema), encoded in scopes.items():
            n = len(scope_field) + sum(map(len, encoded)) + len(scope_schema)
            heads.append(b"\x12" + varint(n))  # ResourceSpans.scope_spans (2)
            size += len(heads[-1]) + n
        out += (b"\x0a", varint(size), resource_field)  # ExportTraceServiceRequest.resource_spans (1)
        for head, ((scope_field, scope_schema), encoded) in zip(heads, scopes.items(), strict=True):
            out += (head, scope_field)
            out += encoded
            out.append(scope_schema)
        out.append(resource_schema)
    return out


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """ExportTraceServiceRequest bytes for ``spans`` (a fresh encoder: no caches kept)."""
    return SpanEncoder().encode(spans)
