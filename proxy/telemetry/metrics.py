"""A lean in-process metrics recorder, shown as Prometheus text and exported as OTLP.

Why not the OpenTelemetry SDK's MeterProvider: its per-call path (attribute
dict -> frozenset key, a lock, an aggregation object per series) costs several
microseconds per measurement, and the sidecar takes about ten measurements per
request. Here an instrument is a dict keyed by a tuple of attribute values, in
the order of the instrument's attribute names; a measurement is one dict
lookup and a list update or two on the event loop, no lock (a histogram's
values are folded into its point in batches: `Histogram`). The tuples may
nest (a backend's labels travel as one precomputed tuple), flattened only when
the data is read: at scrape time (`render_prometheus`) or when an export is
due (`Registry.collect`, then `proxy.telemetry.otlp_metrics`).

Everything is cumulative since the registry was made (OTLP cumulative
temporality; Prometheus counters), so a lost export loses nothing but a point.
Measurements are taken and collected on the event loop; only copies leave it.
"""

from __future__ import annotations

import math
import re
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from functools import reduce
from operator import add
from typing import Any, TypeVar

import msgspec

Labels = tuple[Any, ...]  # attribute values, possibly nested tuples, in the instrument's name order
Names = tuple[Any, ...]  # attribute names, nested the same way

COUNTER, HISTOGRAM, GAUGE = "counter", "histogram", "gauge"


class Instrument:
    """One metric: its identity, and its points keyed by attribute-value tuples."""

    kind = ""

    def __init__(self, *, name: str, unit: str, description: str, attributes: Names) -> None:
        self.name, self.unit, self.description, self.attributes = name, unit, description, attributes

    def points(self) -> list[tuple[Labels, Any]]:
        raise NotImplementedError


class Counter(Instrument):
    """A monotonic sum (float values: costs in USD are fractions)."""

    kind = COUNTER

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.values: dict[Labels, list[float]] = {}  # one-item lists: a caller may keep the cell

    def add(self, key: Labels, value: float = 1) -> None:
        if not finite(value):
            return
        cell = self.values.get(key)
        if cell is None:
            cell = self.values[key] = [0]
        cell[0] += value

    def cell(self, key: Labels) -> list[float]:
        """The series' mutable total, for a caller that adds to it directly (`cell[0] += n`)."""
        cell = self.values.get(key)
        if cell is None:
            cell = self.values[key] = [0]
        return cell

    def points(self) -> list[tuple[Labels, Any]]:
        return [(key, cell[0]) for key, cell in self.values.items()]


class Histogram(Instrument):
    """Explicit buckets; a point is ``[count, sum, min, max, bucket_0 .. bucket_n]``.

    Bucket i counts values in (bounds[i-1], bounds[i]] (the OTLP and Prometheus rule,
    hence ``bisect_left``); the last bucket is everything above the last bound.

    A measurement is appended to its series' `Pending` values, folded into the point (`fold`) once
    FOLD_AT are there and before every read (`points`): the point is the same, bit for bit, as if
    each value had been observed as it came, for a fraction of the cost per measurement."""

    kind = HISTOGRAM

    def __init__(self, *, bounds: tuple[float, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bounds = bounds
        self.data: dict[Labels, list[float]] = {}
        self.pending: dict[Labels, Pending] = {}

    def record(self, key: Labels, value: float) -> None:
        pending = self.pending.get(key)
        if pending is None:
            pending = self.series(key)
        pending.append(value)
        if len(pending) >= FOLD_AT:
            fold(pending)

    def series(self, key: Labels) -> Pending:
        """The series' pending values, for a caller that appends its measurements there itself (and
        folds them with `fold` once FOLD_AT are there). Every value of the series goes there, so that
        they reach the point in the order they came."""
        pending = self.pending.get(key)
        if pending is None:
            pending = self.pending[key] = Pending()
            pending.bounds = self.bounds
            pending.point = self.data[key] = [0, 0.0, 0.0, 0.0] + [0] * (len(self.bounds) + 1)
        return pending

    def points(self) -> list[tuple[Labels, Any]]:
        for pending in self.pending.values():
            if pending:
                fold(pending)
        return [(key, point[:]) for key, point in self.data.items() if point[0]]


# Values a histogram series keeps before they are folded into its point: a fold's few calls are shared
# by this many measurements, and the values wait in a list of this size at most (per series).
FOLD_AT = 16


class Pending(list):  # type: ignore[type-arg]
    """A histogram series' measurements not yet folded into its `point` (see Histogram)."""

    __slots__ = ("bounds", "point")
    bounds: tuple[float, ...]  # its histogram's
    point: list[float]


# A measurement outside this is no measurement (and would make a sum infinite for good).
_LIMIT = 1e300


def finite(value: Any) -> bool:
    """A number a metric can take (not a string, a bool, NaN or an infinity)."""
    return (type(value) is int or type(value) is float) and -_LIMIT < value < _LIMIT


def observe(point: list[float], bounds: tuple[float, ...], value: float) -> None:
    """One measurement into a histogram point; anything but a finite number is dropped, so a bad
    value (a string, NaN) can neither raise here nor spoil the point for the values after it."""
    if not ((type(value) is float or type(value) is int) and -_LIMIT < value < _LIMIT):
        return
    if point[0]:
        if value < point[2]:
            point[2] = value
        elif value > point[3]:
            point[3] = value
    else:
        point[2] = point[3] = value
    point[0] += 1
    point[1] += value
    point[4 + bisect_left(bounds, value)] += 1


_NUMBERS = frozenset({float, int})


def fold(values: Pending) -> None:
    """Fold `values` into their point and empty them: the point `observe` would make of them one by
    one, in a few C calls when all are finite numbers (min and max are the first of their equals, as
    there; the sum is added in the same order), by `observe` itself otherwise."""
    if values and not _fold_numbers(values.point, values.bounds, values):
        for value in values:
            observe(values.point, values.bounds, value)
    values.clear()


def _fold_numbers(point: list[float], bounds: tuple[float, ...], values: list[Any]) -> bool:
    """`fold` of values that are all finite numbers; False (the point untouched) when some are not.

    Sorted (stable), they give min and max (the first of their equals) and their buckets a run at a
    time: a batch's values mostly fall in one or two buckets."""
    if not _NUMBERS.issuperset(map(type, values)):
        return False
    ordered = sorted(values)
    if not (ordered[0] > -_LIMIT and ordered[-1] < _LIMIT):
        return False
    try:  # (a NaN leaves the order undefined: a huge int past the ends may meet the sum)
        total = reduce(add, values, point[1])
    except OverflowError:
        return False
    if math.isnan(total):  # a NaN among them
        return False
    n = len(ordered)
    low, high = ordered[0], ordered[bisect_left(ordered, ordered[-1])]
    if not point[0]:
        point[2], point[3] = low, high
    else:
        if low < point[2]:
            point[2] = low
        if high > point[3]:
            point[3] = high
    point[0] += n
    point[1] = total
    i, last = 0, len(bounds)
    while True:  # the bucket of ordered[i], and how many values from there fall in it
        bucket = bisect_left(bounds, ordered[i])
        if bucket == last:
            point[4 + bucket] += n - i
            return True
        j = bisect_right(ordered, bounds[bucket], i)
        point[4 + bucket] += j - i
        if j == n:
            return True
        i = j


class Observed(Instrument):
    """A value read when the data is collected (a gauge, or a counter kept elsewhere)."""

    def __init__(self, *, kind: str, callback: Callable[[], Iterable[tuple[Labels, float]]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.callback = callback

    def points(self) -> list[tuple[Labels, Any]]:
        return list(self.callback())


class Collected(msgspec.Struct, frozen=True):
    """A copy of the registry's data at one moment, for an exporter thread to encode."""

    start_time_ns: int
    time_ns: int
    metrics: list[tuple[Instrument, list[tuple[Labels, Any]]]]


_I = TypeVar("_I", bound=Instrument)


class Registry:
    """The instruments of one process, in registration order."""

    def __init__(self) -> None:
        self.instruments: list[Instrument] = []
        self.start_time_ns = time.time_ns()

    def _add(self, instrument: _I) -> _I:
        if any(i.name == instrument.name for i in self.instruments):
            raise ValueError(f"metric {instrument.name!r} registered twice")
        self.instruments.append(instrument)
        return instrument

    def counter(self, name: str, *, unit: str, description: str, attributes: Names) -> Counter:
        return self._add(Counter(name=name, unit=unit, description=description, attributes=attributes))

    def histogram(
        self, name: str, *, unit: str, description: str, attributes: Names, bounds: tuple[float, ...]
    ) -> Histogram:
        return self._add(Histogram(name=name, unit=unit, description=description, attributes=attributes, bounds=bounds))

    def observed(
        self,
        name: str,
        *,
        kind: str,
        unit: str,
        description: str,
        attributes: Names,
        callback: Callable[[], Iterable[tuple[Labels, float]]],
    ) -> Observed:
        return self._add(
            Observed(name=name, kind=kind, unit=unit, description=description, attributes=attributes, callback=callback)
        )

    def collect(self) -> Collected:
        """Copies of every point; cheap enough for the event loop (a few hundred series)."""
        return Collected(self.start_time_ns, time.time_ns(), [(i, i.points()) for i in self.instruments])

    def prometheus_names(self) -> dict[str, str]:
        """Prometheus family name -> OTel name, for every instrument (dashboards are checked against it)."""
        return {prometheus_name(i): i.name for i in self.instruments}


def flatten(names: Names, values: Labels) -> Iterator[tuple[str, Any]]:
    """(name, value) pairs of nested name/value tuples; empty and None values are left out."""
    for name, value in zip(names, values, strict=True):
        if type(name) is tuple:
            yield from flatten(name, value)
        elif value is not None and value != "":
            yield name, value


# ---------------------------------------------------------------------------
# Prometheus text exposition (format 0.0.4), names as in the OpenTelemetry
# "Prometheus and OpenMetrics compatibility" spec: dots to underscores, the unit
# appended (annotations in braces dropped), counters suffixed _total.

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "USD": "usd", "1": ""}
_BAD = re.compile(r"[^a-zA-Z0-9_:]+")


def _sanitize(name: str) -> str:
    name = _BAD.sub("_", name)
    return "_" + name if name[:1].isdigit() else name


def prometheus_name(instrument: Instrument) -> str:
    """The metric family name Prometheus sees (without _bucket/_sum/_count)."""
    name = _sanitize(instrument.name)
    unit = re.sub(r"\{[^}]*\}", "", instrument.unit)
    unit = _sanitize(_UNITS.get(unit, unit)) if unit else ""
    if unit and not name.endswith("_" + unit):
        name = f"{name}_{unit}"
    if instrument.kind == COUNTER and not name.endswith("_total"):
        name += "_total"
    return name


def _escape(value: Any) -> str:
    text = value if type(value) is str else str(value).lower() if type(value) is bool else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if type(value) is int or (type(value) is float and value.is_integer() and abs(value) < 1 << 53):
        return str(int(value))
    return repr(float(value))


def _labels(names: Names, values: Labels, extra: str = "") -> str:
    pairs = [f'{_sanitize(n)}="{_escape(v)}"' for n, v in flatten(names, values)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def render_prometheus(registry: Registry) -> str:
    lines: list[str] = []
    for instrument in registry.instruments:
        name = prometheus_name(instrument)
        kind = "gauge" if instrument.kind == GAUGE else instrument.kind
        lines.append(f"# HELP {name} {instrument.description}")
        lines.append(f"# TYPE {name} {kind}")
        names = instrument.attributes
        for key, value in sorted(instrument.points(), key=lambda p: repr(p[0])):
            if instrument.kind != HISTOGRAM:
                lines.append(f"{name}{_labels(names, key)} {_number(value)}")
                continue
            bounds = instrument.bounds  # type: ignore[attr-defined]
            running = 0
            for i, bound in enumerate((*bounds, math.inf)):
                running += value[4 + i]
                le = 'le="' + _number(bound) + '"'
                lines.append(f"{name}_bucket{_labels(names, key, le)} {_number(running)}")
            lines.append(f"{name}_sum{_labels(names, key)} {_number(value[1])}")
            lines.append(f"{name}_count{_labels(names, key)} {_number(value[0])}")
    return "\n".join(lines) + "\n"
