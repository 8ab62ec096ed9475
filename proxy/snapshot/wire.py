"""The snapshot as a whole, its wire form and content version, and the stream protocol's names."""

from __future__ import annotations

import hashlib
import re
from typing import Any, TypeVar

import msgspec

from proxy.snapshot.base import (
    Frozen,
    Secret,
    check_pattern,
    check_range,
    decode_secret,
    hold_secrets,
    mask_secret,
    reveal_secret,
)
from proxy.snapshot.policies import Policy
from proxy.snapshot.providers import Provider
from proxy.snapshot.routes import Route

T = TypeVar("T", bound=msgspec.Struct)
_KEY_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class LimitStore(Frozen, frozen=True, kw_only=True):
    """Where the limit counters live when every sidecar shares them (Redis); the controller sends it
    with the snapshot, so one Secret in the controller's namespace reaches every pod."""

    # redis://, rediss://, unix://, or redis+sentinel://host:26379[,host:26379]/service[/db]; may carry a password.
    url: Secret
    cluster: bool = False  # speak Redis Cluster to the URL's node
    timeout_seconds: float = 0.1
    key_prefix: str = "modelway"

    def __post_init__(self) -> None:
        hold_secrets(self, "url")
        check_range("timeoutSeconds", self.timeout_seconds, gt=0, le=5)
        check_pattern("keyPrefix", self.key_prefix, _KEY_PREFIX)


class Snapshot(Frozen, frozen=True, kw_only=True):
    """Everything one sidecar needs. `version` is a content hash (see `content_version`)."""

    version: str = ""
    providers: tuple[Provider, ...] = ()
    routes: tuple[Route, ...] = ()
    policy: Policy = Policy()
    # None: the sidecar's own `--limits-redis-url`, else counters in the sidecar's memory.
    limit_store: LimitStore | None = None

    def __post_init__(self) -> None:
        providers = {p.name for p in self.providers}
        if len(providers) != len(self.providers):
            raise ValueError("provider names must be unique")
        models = [r.model for r in self.routes]
        if len(models) != len(set(models)):
            dupes = sorted({m for m in models if models.count(m) > 1})
            raise ValueError(f"more than one route serves model(s) {dupes}")
        for route in self.routes:
            for rule in route.rules:
                for backend in (*rule.backends, *rule.fallbacks):
                    if backend.provider not in providers:
                        raise ValueError(
                            f"route {route.name!r} rule {rule.name!r}: unknown provider "
                            f"{backend.provider!r} (known: {sorted(providers)})"
                        )

    def masked(self) -> dict[str, Any]:
        """The snapshot as JSON-ready data with every credential replaced by a marker, and every field
        shown, defaults too (the wire leaves them out; an operator reading a dump should not have to
        know the defaults to see that a list is empty or a retry is the default one)."""
        data: dict[str, Any] = msgspec.to_builtins(_every_field(self), enc_hook=mask_secret)
        return data


def _every_field(value: Any) -> Any:
    """Structs as dicts of all their fields under their wire names, recursively (for `masked`)."""
    if isinstance(value, msgspec.Struct):
        return {f.encode_name: _every_field(getattr(value, f.name)) for f in msgspec.structs.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_every_field(item) for item in value]
    if isinstance(value, dict):
        return {key: _every_field(item) for key, item in value.items()}
    return value


def to_wire(snapshot: Snapshot, *, exclude_version: bool = False) -> dict[str, Any]:
    """The snapshot as JSON-ready data WITH credentials: for the controller stream and the
    sidecar's saved copy only, never for logs or dumps (use `masked`). Fields at their default
    are left out (see the package's docstring: that is what lets an older sidecar read it)."""
    data: dict[str, Any] = msgspec.to_builtins(snapshot, enc_hook=reveal_secret)
    if exclude_version:
        data.pop("version", None)
    return data


def content_version(snapshot: Snapshot) -> str:
    """A stable hash of the snapshot's content (credentials included, so rotation is a change): its
    wire form without the version, keys sorted, compact JSON. Equal snapshots hash the same however
    they were built (defaults are left out by value, see `Frozen`)."""
    data = msgspec.to_builtins(snapshot, enc_hook=reveal_secret, order="sorted")
    data.pop("version", None)
    return hashlib.sha256(msgspec.json.encode(data)).hexdigest()[:16]


def parse_struct(struct_type: type[T], data: Any) -> T:
    """Any part of a snapshot from raw data (camelCase keys, credentials as strings), validated."""
    return msgspec.convert(data, struct_type, dec_hook=decode_secret)


def parse_snapshot(data: dict[str, Any]) -> Snapshot:
    """Validate raw data into a Snapshot, filling in the content version when absent. Raises
    msgspec.ValidationError (a ValueError); `problem_text` says what is wrong without the values."""
    snapshot = parse_struct(Snapshot, data)
    if not snapshot.version:
        snapshot = msgspec.structs.replace(snapshot, version=content_version(snapshot))
    return snapshot


_WHERE = " - at `$"
_FIELD = re.compile(r"([a-z][A-Za-z0-9]*): ")
_INDEX = re.compile(r"\[(\d+)\]")
_UNKNOWN = re.compile(r"Object contains unknown field `([^`]{1,100})`")


def problem_text(exc: BaseException) -> str:
    """What is wrong with a snapshot, as `path: problem`, quoting no input value (a credential may
    sit in any field): msgspec names the value of a bad choice, which is dropped here."""
    message = str(exc) or type(exc).__name__
    problem, found, where = message.rpartition(_WHERE)
    if not found:
        problem, where = message, ""
    if problem.startswith("Invalid enum value"):
        problem = "Invalid enum value: not one of the field's choices"
    problem = problem[:300]
    where = _INDEX.sub(r".\1", where.removesuffix("`")).removeprefix(".")[:200]  # providers.0.apiKey
    unknown = _UNKNOWN.fullmatch(problem)
    if unknown is not None:  # the whole path, and what it likely is (the stream's sidecar words it further)
        path = f"{where}.{unknown[1]}" if where else unknown[1]
        return f"unknown field `{path}` (a typo, or a field newer than this modelway)"
    field = _FIELD.match(problem)
    if field is not None and where:  # a struct's check names its field: where.field: problem
        where, problem = f"{where}.{field[1]}", problem[field.end() :]
    return f"{where}: {problem}" if where else problem


# --- the controller <-> sidecar stream (a WebSocket; JSON text messages) ------------------
#
# sidecar -> controller, first:  {"type": "hello", "version": "<what it runs, or ''>",
#                                 "schema": snapshot_schema()}  (sidecars before it send no schema)
# controller -> sidecar:         {"type": "snapshot", "version": v, "snapshot": to_wire(...)}
# sidecar -> controller:         {"type": "ack", "version": v}
#                                {"type": "nack", "version": v, "error": "<why; no secrets>"}
#                                (a field it does not know: `older_sidecar`'s words)
#                                {"type": "counts", "sidecar": "<its id>", "started": <unix s>,
#                                 "experiments": {"<experiment name>": {"<arm>": ArmStats.to_dict()}}}
# A counts message carries the sidecar's running totals since it started (never deltas), so the
# controller keeps the latest per (sidecar, started) and a resend or a reconnect counts nothing twice.
# Bounded: at most COUNTS_MAX_EXPERIMENTS experiments of at most 16 arms, in a message of at most
# COUNTS_MAX_BYTES; every few seconds while something was counted.
# Across versions: each end ignores the message keys it does not know (the controller also the message
# types), so a key can be added to hello, ack and nack, and an arm count the controller does not know
# is left out of a counts message (`ArmStats.from_dict`); but a snapshot with a field the sidecar does
# not know is refused whole (see the package's docstring).
# The sidecar authenticates with `Authorization: Bearer <projected ServiceAccount token>`
# (audience `modelway`); it only ever receives what its workload may see.

STREAM_PATH = "/v1/stream"
COUNTS_MAX_EXPERIMENTS = 256
COUNTS_MAX_BYTES = 256 * 1024
TOKEN_AUDIENCE = "modelway"
