"""The compatibility promise between a controller and the sidecars of an older image.

During an upgrade the controller runs the new image while most sidecars still run the old one
until their pods restart, and a sidecar refuses any field it does not know. The wire leaves
every field at its default out, so an older sidecar refuses only a snapshot that uses a field
it does not know, and reads every other one as the newer controller meant it.

`previous_snapshot_schema.json` is the snapshot schema of an older sidecar: msgspec's JSON
schema of `Snapshot` at the revision it names (its `recordedFrom`), the msgspec snapshot from
before the context windows (`models`), `caBundle` and `matchInputTokens`. The tests build a
decoder from it as strict as that sidecar's (unknown fields refused, required ones required,
its own defaults filled in) and give it what today's code writes. Re-record it when the oldest
sidecar a controller must feed moves on:

    python -m tests.unit.test_snapshot_compat <revision> > tests/unit/previous_snapshot_schema.json
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union

import msgspec
import pytest

from proxy.snapshot import ModelWindow, Snapshot, TokenRange, parse_snapshot, to_wire
from tests.unit.snapshot_samples import plain, rich, struct_names, written_in_full

RECORD = Path(__file__).with_name("previous_snapshot_schema.json")
_SCALARS: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool, "null": None}


@functools.cache
def previous_schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RECORD.read_text())
    return data


@functools.cache
def previous_decoder() -> type[msgspec.Struct]:
    """The previous sidecar's Snapshot as msgspec structs built from the recorded schema: fields under
    their wire names, unknown ones refused, missing ones given the recorded defaults. (Its value checks,
    each struct's __post_init__, are left out: a check is about values, not about which fields exist.)"""
    defs: dict[str, Any] = previous_schema()["$defs"]
    built: dict[str, type[msgspec.Struct]] = {}

    def type_of(node: dict[str, Any]) -> Any:
        if "$ref" in node:
            return struct(node["$ref"].rsplit("/", 1)[1])
        if "anyOf" in node:
            return Union[tuple(type_of(n) for n in node["anyOf"])]  # noqa: UP007  (built from a runtime tuple)
        if "enum" in node:
            return Literal[tuple(node["enum"])]
        if node["type"] == "array":
            return tuple[type_of(node["items"]), ...]  # type: ignore[misc]
        if node["type"] == "object":
            return dict[str, type_of(node["additionalProperties"])]  # type: ignore[misc]
        return _SCALARS[node["type"]]

    def struct(name: str) -> type[msgspec.Struct]:
        if name not in built:
            schema = defs[name]
            fields: list[Any] = []
            for field, node in schema["properties"].items():
                kind = type_of(node)
                if field in schema["required"]:
                    fields.append((field, kind))
                else:
                    factory = functools.partial(msgspec.convert, node["default"], kind)
                    fields.append((field, kind, msgspec.field(default_factory=factory)))
            built[name] = msgspec.defstruct(name, fields, kw_only=True, forbid_unknown_fields=True, frozen=True)
        return built[name]

    return struct("Snapshot")


def as_sent(snapshot: Snapshot) -> Any:
    """What crosses the stream: today's wire through JSON text."""
    return json.loads(json.dumps(to_wire(snapshot)))


@pytest.mark.parametrize("sample", [rich, plain], ids=["every-field-set", "every-default"])
def test_a_snapshot_using_no_newer_field_is_read_by_the_previous_sidecar_as_meant(
    sample: Callable[[], Snapshot],
) -> None:
    snapshot = parse_snapshot(to_wire(sample()))
    received = msgspec.convert(as_sent(snapshot), previous_decoder())
    # every field it knows, defaults included, holds for the old sidecar what it holds for today's code
    assert written_in_full(received) == known_to(received, snapshot)


def known_to(theirs: Any, ours: Any) -> Any:
    """Our value written in full, with only the fields the previous sidecar's structs have."""
    if isinstance(ours, msgspec.Struct):
        known = {f.name for f in msgspec.structs.fields(theirs)}  # its fields are named as on the wire
        return {
            f.encode_name: known_to(getattr(theirs, f.encode_name), getattr(ours, f.name))
            for f in msgspec.structs.fields(ours)
            if f.encode_name in known
        }
    if isinstance(ours, tuple) and isinstance(theirs, tuple) and len(ours) == len(theirs):
        return [known_to(t, o) for t, o in zip(theirs, ours, strict=True)]
    if isinstance(ours, dict) and isinstance(theirs, dict) and ours.keys() == theirs.keys():
        return {key: known_to(theirs[key], value) for key, value in ours.items()}
    return written_in_full(ours)


def test_the_samples_hold_every_struct_the_previous_sidecar_knows() -> None:
    held = struct_names(rich()) & struct_names(plain())
    assert set(previous_schema()["$defs"]) - held == set()


SHAPED_CERTIFICATE = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n"  # DER-shaped, for the check


def with_provider(snapshot: Snapshot, **changes: Any) -> Snapshot:
    first = msgspec.structs.replace(snapshot.providers[0], **changes)
    return msgspec.structs.replace(snapshot, providers=(first, *snapshot.providers[1:]))


def with_second_rule(snapshot: Snapshot, **changes: Any) -> Snapshot:
    route = snapshot.routes[0]
    rules = (route.rules[0], msgspec.structs.replace(route.rules[1], **changes), *route.rules[2:])
    return msgspec.structs.replace(snapshot, routes=(msgspec.structs.replace(route, rules=rules), *snapshot.routes[1:]))


@pytest.mark.parametrize(
    ("uses", "refused"),
    [
        (lambda s: with_provider(s, ca_bundle=SHAPED_CERTIFICATE), r"`caBundle` - at `\$.providers\[0\]`"),
        (lambda s: with_provider(s, models={"gpt-4o": ModelWindow(context_window=128_000)}), "`models`"),
        (lambda s: with_second_rule(s, match_input_tokens=TokenRange(min=1000)), r"`matchInputTokens` - at `\$.rou"),
    ],
    ids=["caBundle", "models", "matchInputTokens"],
)
def test_only_a_snapshot_using_a_newer_field_is_refused_by_the_previous_sidecar_naming_it(
    uses: Callable[[Snapshot], Snapshot], refused: str
) -> None:
    snapshot = rich()
    msgspec.convert(as_sent(snapshot), previous_decoder())  # without it: read
    with pytest.raises(msgspec.ValidationError, match=f"Object contains unknown field {refused}"):
        msgspec.convert(as_sent(uses(snapshot)), previous_decoder())


def current_fields() -> dict[str, dict[str, tuple[bool, Any]]]:
    """Per struct of today's contract: per wire name, (required, the default written in full)."""
    found: dict[str, dict[str, tuple[bool, Any]]] = {}

    def visit(struct_type: type[msgspec.Struct]) -> None:
        if struct_type.__name__ in found:
            return
        fields = found[struct_type.__name__] = {}
        for field in msgspec.structs.fields(struct_type):
            if field.default is not msgspec.NODEFAULT:
                default = written_in_full(field.default)
            elif field.default_factory is not msgspec.NODEFAULT:
                default = written_in_full(field.default_factory())
            else:
                default = msgspec.NODEFAULT
            fields[field.encode_name] = (default is msgspec.NODEFAULT, default)
            for inner in _struct_types(field.type):
                visit(inner)

    visit(Snapshot)
    return found


def _struct_types(kind: Any) -> list[type[msgspec.Struct]]:
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return [kind]
    return [inner for arg in getattr(kind, "__args__", ()) for inner in _struct_types(arg)]


def test_fields_since_the_previous_schema_have_defaults_and_its_defaults_are_unchanged() -> None:
    """A new field without a default is written in every snapshot (every older sidecar refuses them all);
    a changed default is omitted by today's controller and read as the old one by an older sidecar."""
    now = current_fields()
    problems = []
    for name, schema in previous_schema()["$defs"].items():
        if name not in now:
            problems.append(f"{name}: gone from the contract, yet older sidecars expect it")
            continue
        for field, node in schema["properties"].items():
            required_then = field in schema["required"]
            if field not in now[name]:
                if required_then:
                    problems.append(f"{name}.{field}: gone, yet older sidecars require it")
                continue
            required, default = now[name][field]
            if required and not required_then:
                problems.append(f"{name}.{field}: had a default, now required (older controllers leave it out)")
            elif not required and not required_then and default != node["default"]:
                problems.append(
                    f"{name}.{field}: default changed from {node['default']!r} to {default!r}: an older sidecar "
                    "reads the omitted field as the old default (a breaking change)"
                )
        for field, (required, _) in now[name].items():
            if field not in schema["properties"] and required:
                problems.append(
                    f"{name}.{field}: new and without a default: every snapshot carries it and every older "
                    "sidecar refuses them all (give it a default that means 'feature off')"
                )
    assert problems == []


def record(revision: str) -> dict[str, Any]:
    """msgspec's JSON schema of Snapshot at `revision` (descriptions dropped: they are not the contract)."""
    root = Path(__file__).resolve().parents[2]
    listing = subprocess.run(
        ["git", "ls-tree", "--name-only", f"{revision}:proxy/snapshot/"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    package = Path(tempfile.mkdtemp()) / "snapshot_recorded"
    package.mkdir()
    for name in listing:
        source = subprocess.run(
            ["git", "show", f"{revision}:proxy/snapshot/{name}"], cwd=root, check=True, capture_output=True, text=True
        ).stdout
        (package / name).write_text(re.sub(r"\bproxy\.snapshot\b", "snapshot_recorded", source))
    sys.path.insert(0, str(package.parent))
    import snapshot_recorded  # type: ignore[import-not-found]
    from snapshot_recorded.base import Secret  # type: ignore[import-not-found]

    def secret_as_string(kind: type) -> dict[str, Any]:
        if kind is Secret:
            return {"type": "string"}
        raise NotImplementedError

    schema = msgspec.json.schema(snapshot_recorded.Snapshot, schema_hook=secret_as_string)
    for definition in schema["$defs"].values():
        definition.pop("description", None)
    commit = subprocess.run(
        ["git", "log", "-1", "--format=%h %s", revision], cwd=root, check=True, capture_output=True, text=True
    ).stdout.strip()
    return {"recordedFrom": commit, **schema}


if __name__ == "__main__":
    print(json.dumps(record(sys.argv[1]), indent=1, sort_keys=True))
