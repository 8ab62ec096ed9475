"""Resource, scope, limits and sampler for ``proxy.telemetry.tracing``'s lean span recorder.

What the provider fixes once per process and shares with every tracer, read from the
environment as the SDK reads it:

* ``LeanResource`` / ``LeanScope``: just what ``proxy.telemetry.otlp_encode`` needs of a Resource
  and an InstrumentationScope; ``build_resource`` fills the resource from telemetry.sdk.*,
  ``service.instance.id``, ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME``.
* ``SpanLimits``: count limits from ``OTEL_SPAN_*_COUNT_LIMIT`` / ``OTEL_ATTRIBUTE_COUNT_LIMIT``.
* ``Sampler``: from ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (always_on,
  always_off, traceidratio and their parentbased_* forms).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry.trace import SpanContext
from opentelemetry.version import __version__ as _api_version

log = logging.getLogger("proxy.telemetry.tracing")

_MASK64 = (1 << 64) - 1
_ENV_ALIASES = {
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
    "always_on",
    "always_off",
    "traceidratio",
}

# telemetry.sdk.version: the OpenTelemetry release the lean recorder implements, read from the API
# package (released in lockstep with the SDK). Not importlib.metadata's version(): that scans every
# installed distribution and keeps ~1.5 MB of it in each sidecar's memory.
_SDK_VERSION = _api_version


class LeanResource:
    """What the encoder needs of a Resource: ``attributes`` and ``schema_url``."""

    __slots__ = ("attributes", "schema_url")

    def __init__(self, attributes: Mapping[str, Any], schema_url: str = "") -> None:
        self.attributes = dict(attributes)
        self.schema_url = schema_url


class LeanScope:
    """What the encoder needs of an InstrumentationScope."""

    __slots__ = ("attributes", "name", "schema_url", "version")

    def __init__(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        self.name, self.version, self.schema_url = name or "", version or "", schema_url or ""
        self.attributes = dict(attributes) if attributes else None


def parse_resource_attributes(value: str | None) -> dict[str, str]:
    """``OTEL_RESOURCE_ATTRIBUTES``: ``k1=v1,k2=v2``, URL-encoded; bad items skipped (as the SDK)."""
    import urllib.parse

    out: dict[str, str] = {}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            log.warning("OTEL_RESOURCE_ATTRIBUTES: ignoring malformed item %r", item)
            continue
        out[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(val.strip())
    return out


_INSTANCE_ID: tuple[int, str] | None = None


def _instance_id() -> str:
    global _INSTANCE_ID
    if _INSTANCE_ID is None or _INSTANCE_ID[0] != os.getpid():
        import uuid

        _INSTANCE_ID = (os.getpid(), str(uuid.uuid4()))
    return _INSTANCE_ID[1]


def build_resource(service_name: str, environ: Mapping[str, str] = os.environ) -> LeanResource:
    """telemetry.sdk.*, ``service.instance.id``, then ``service.name`` (the default),
    ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SERVICE_NAME``.

    The same precedence as the SDK's ``Resource.create`` + ``OTELResourceDetector``: the
    environment's ``service.name`` beats the default, ``OTEL_SERVICE_NAME`` beats both.
    """
    attributes: dict[str, Any] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": _SDK_VERSION,
        "service.instance.id": _instance_id(),  # as the SDK's Resource.create: a UUID v4 per process
        "service.name": service_name,
    }
    attributes.update(parse_resource_attributes(environ.get("OTEL_RESOURCE_ATTRIBUTES")))
    if name := (environ.get("OTEL_SERVICE_NAME") or "").strip():
        attributes["service.name"] = name
    return LeanResource(attributes)


class SpanLimits:
    """Count limits from OTEL_SPAN_*_COUNT_LIMIT / OTEL_ATTRIBUTE_COUNT_LIMIT (default 128 each).

    As in the SDK, a full attributes dict or events list drops its oldest entry.
    Attribute value length limits are not applied.
    """

    __slots__ = ("attributes", "event_attributes", "events", "link_attributes", "links")

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        def limit(name: str, fallback: int) -> int:
            raw = (environ.get(name) or "").strip()
            try:
                return max(int(raw), 0) if raw else fallback
            except ValueError:
                log.warning("%s=%r is not an integer; using %d", name, raw, fallback)
                return fallback

        general = limit("OTEL_ATTRIBUTE_COUNT_LIMIT", 128)
        self.attributes = limit("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", general)
        self.events = limit("OTEL_SPAN_EVENT_COUNT_LIMIT", 128)
        self.links = limit("OTEL_SPAN_LINK_COUNT_LIMIT", 128)
        self.event_attributes = limit("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", general)
        self.link_attributes = limit("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", general)


class Sampler:
    """A root decision (a bound on the trace id's low 64 bits, as the SDK's TraceIdRatioBased:
    always_on is 2**64, always_off 0) and whether a parent's sampled flag decides instead."""

    __slots__ = ("bound", "description", "parent_based")

    def __init__(self, name: str = "parentbased_always_on", ratio: float = 1.0) -> None:
        name = name.strip().lower()
        if name not in _ENV_ALIASES:
            raise ValueError(f"unknown sampler {name!r}")
        self.parent_based = name.startswith("parentbased_")
        root = name.removeprefix("parentbased_")
        if root == "always_on":
            self.bound = 1 << 64
        elif root == "always_off":
            self.bound = 0
        else:
            if not 0.0 <= ratio <= 1.0:
                raise ValueError("the ratio must be in [0.0, 1.0]")
            self.bound = round(ratio * (1 << 64))
        self.description = name if root != "traceidratio" else f"{name}({ratio})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Sampler:
        name = (environ.get("OTEL_TRACES_SAMPLER") or "parentbased_always_on").strip().lower()
        if name not in _ENV_ALIASES:
            log.warning("OTEL_TRACES_SAMPLER=%r is not supported; using parentbased_always_on", name)
            return cls()
        ratio = 1.0
        if name.endswith("traceidratio"):
            raw = (environ.get("OTEL_TRACES_SAMPLER_ARG") or "").strip()
            try:
                ratio = float(raw) if raw else 1.0
                if not 0.0 <= ratio <= 1.0:
                    raise ValueError
            except ValueError:
                log.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a ratio in [0, 1]; using 1.0", raw)
                ratio = 1.0
        return cls(name, ratio)

    def should_sample(self, parent: SpanContext | None, trace_id: int) -> bool:
        if self.parent_based and parent is not None:
            return bool(parent.trace_flags & 1)
        return (trace_id & _MASK64) < self.bound


__all__ = ["LeanResource", "LeanScope", "Sampler", "SpanLimits", "build_resource", "parse_resource_attributes"]
