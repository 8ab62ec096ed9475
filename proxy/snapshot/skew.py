"""A sidecar older than its controller: the words its refusal goes back in, and the fingerprint of the
snapshot schema each program knows.

A sidecar refuses a snapshot with a field it does not know; from the controller, whose snapshots are
built from these structs, that is no typo but a newer controller (see the package's docstring). The
refusal goes back in the NACK to the controller and from there into the route's Programmed=False
SidecarRejected condition, where an operator in the middle of an upgrade reads it: it names the
field, the schemas of both ends when known, and what to do.
"""

from __future__ import annotations

import functools
import hashlib
import re
import typing
from typing import Any, Literal

import msgspec

from proxy.snapshot.wire import Snapshot

# The unknown field in a refusal, in the words of every sidecar so far: this one's ("refused unknown
# field `providers.0.caBundle`: ...", from `problem_text`'s "unknown field `providers.0.caBundle` (...)"),
# the msgspec ones before it ("providers.0: Object contains unknown field `caBundle`") and the pydantic
# ones before those ("providers.0.caBundle: Extra inputs are not permitted").
_UNKNOWN = re.compile(r"^(?:(?P<where>[\w.-]+): )?(?:Object contains )?unknown field `(?P<name>[^`]{1,200})`")
_EXTRA = re.compile(r"^(?P<path>[\w.-]{1,300}): Extra inputs are not permitted")
REFUSED = "refused unknown field"  # how a refusal worded here begins


def refused_field(problem: str) -> str | None:
    """The dotted path of the field a sidecar's refusal names as unknown, or None for any other refusal."""
    if problem.startswith(REFUSED):
        problem = problem.removeprefix("refused ")
    found = _UNKNOWN.match(problem)
    if found is not None:
        return f"{found['where']}.{found['name']}" if found["where"] else found["name"]
    extra = _EXTRA.match(problem)
    return extra["path"] if extra is not None else None


def older_sidecar(field: str, *, sidecar_schema: str, controller_schema: str = "") -> str:
    """A refusal of `field`, in words for an operator during an upgrade (schemas: `snapshot_schema`;
    an empty one is not known)."""
    sidecar = f"snapshot schema {sidecar_schema}" if sidecar_schema else "an image that reports no snapshot schema"
    controller = f" (snapshot schema {controller_schema})" if controller_schema else ""
    return (
        f"{REFUSED} `{field}`: this sidecar ({sidecar}) is older than the controller{controller} that sent it; "
        "roll the pods onto the controller's image (until then it keeps its last good snapshot)"
    )


def explain_refusal(problem: str, *, sidecar_schema: str, controller_schema: str) -> str:
    """The controller's reading of a sidecar's refusal: one naming an unknown field in the words of a
    sidecar from before they were worded here is worded as `older_sidecar`, its own words kept after."""
    field = refused_field(problem)
    if field is None or problem.startswith(REFUSED):
        return problem
    words = older_sidecar(field, sidecar_schema=sidecar_schema, controller_schema=controller_schema)
    return f"{words}; it said: {problem}"


@functools.cache
def snapshot_schema() -> str:
    """The fingerprint (`schema_fingerprint`) of the snapshot this code reads and writes. Two programs
    with the same one understand each other's snapshots fully; with different ones, the older refuses
    a snapshot that uses a field it lacks."""
    return schema_fingerprint(Snapshot)


def schema_fingerprint(root: type[msgspec.Struct]) -> str:
    """Eight hex digits from every struct reachable from `root`: its fields' wire names, types and
    defaults (not its module, docstrings or checks)."""
    structs: dict[str, Any] = {}
    _shape(root, structs)
    return hashlib.sha256(repr(sorted(structs.items())).encode()).hexdigest()[:8]


def _shape(kind: Any, structs: dict[str, Any]) -> Any:
    """A type as plain data: a struct by name (its fields recorded in `structs`), a generic with its arguments."""
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        name = kind.__name__
        if name not in structs:
            structs[name] = None  # recursion guard
            structs[name] = [
                (field.encode_name, _shape(field.type, structs), _default(field))
                for field in msgspec.structs.fields(kind)
            ]
        return name
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        return ["Literal", *sorted(map(repr, args))]
    if origin is None:
        return getattr(kind, "__name__", repr(kind))
    return [getattr(origin, "__name__", repr(origin)), *(_shape(arg, structs) for arg in args)]


def _default(field: msgspec.structs.FieldInfo) -> str:
    if field.default is not msgspec.NODEFAULT:
        return repr(msgspec.to_builtins(field.default, enc_hook=repr))
    if field.default_factory is not msgspec.NODEFAULT:
        return repr(msgspec.to_builtins(field.default_factory(), enc_hook=repr))
    return "required"
