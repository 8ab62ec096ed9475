"""A snapshot with a field the reader does not know: refused, naming the field and its likely cause, in
words an operator can act on during an upgrade; and the fingerprint that tells two schemas apart."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import msgspec
import pytest

from proxy.runtime import RuntimeHolder
from proxy.snapshot import explain_refusal, older_sidecar, refused_field, snapshot_schema, to_wire
from proxy.snapshot.skew import schema_fingerprint
from proxy.snapshot_file import SnapshotError, read_snapshot_file
from proxy.sync import ControllerSync, SyncSettings
from tests.unit.snapshot_samples import plain

TYPO = """
providers:
  - {name: openai, type: openai, baseUrl: "https://api.openai.com/v1"}
routes:
  - name: chat
    model: chat
    rules:
      - matchHeader: [{name: x-tier}]
        backends: [{provider: openai, model: gpt-4o}]
"""


def test_a_typo_in_a_hand_written_snapshot_is_refused_naming_the_field_where_it_sits(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.yaml"
    path.write_text(TYPO)
    with pytest.raises(SnapshotError) as refused:
        read_snapshot_file(path)
    assert str(refused.value) == (
        f"snapshot {path} is invalid: unknown field `routes.0.rules.0.matchHeader` "
        "(a typo, or a field newer than this modelway)"
    )


def test_the_sidecar_refuses_a_newer_controllers_field_naming_it_and_what_to_do(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holder = RuntimeHolder()
    sync = ControllerSync(
        settings=SyncSettings(controller_url="http://127.0.0.1:1", token_file=tmp_path / "token"), holder=holder
    )
    wire = to_wire(plain())
    wire["providers"][1]["bedrock"]["futureField"] = True  # as a newer controller's snapshot would carry it
    with caplog.at_level(logging.ERROR, logger="modelway.sync"):
        answer = sync._apply(json.dumps({"type": "snapshot", "version": "v2", "snapshot": wire}))
    assert answer == {
        "type": "nack",
        "version": "v2",
        "error": f"refused unknown field `providers.1.bedrock.futureField`: this sidecar (snapshot schema "
        f"{snapshot_schema()}) is older than the controller that sent it; roll the pods onto the controller's "
        "image (until then it keeps its last good snapshot)",
    }
    assert holder.current is None  # nothing swapped in
    assert "refused snapshot v2: refused unknown field `providers.1.bedrock.futureField`" in caplog.text


def test_any_other_refusal_keeps_its_words(tmp_path: Path) -> None:
    sync = ControllerSync(
        settings=SyncSettings(controller_url="http://127.0.0.1:1", token_file=tmp_path / "token"),
        holder=RuntimeHolder(),
    )
    wire = to_wire(plain())
    wire["providers"][0]["baseUrl"] = "ftp://api.openai.com"
    answer = sync._apply(json.dumps({"type": "snapshot", "version": "v2", "snapshot": wire}))
    assert answer["type"] == "nack" and answer["error"].startswith("providers.0.baseUrl: baseURL ")
    assert refused_field(answer["error"]) is None


@pytest.mark.parametrize(
    ("said", "field"),
    [
        ("providers.0: Object contains unknown field `caBundle`", "providers.0.caBundle"),  # msgspec sidecars
        ("Object contains unknown field `futureField`", "futureField"),
        ("routes.0.rules.0.matchInputTokens: Extra inputs are not permitted", "routes.0.rules.0.matchInputTokens"),
    ],
    ids=["msgspec", "msgspec-top-level", "pydantic"],
)
def test_the_controller_words_an_older_sidecars_refusal_for_the_operator(said: str, field: str) -> None:
    """Sidecars from before refusals were worded here say only what msgspec or pydantic said."""
    assert explain_refusal(said, sidecar_schema="", controller_schema="0a1b2c3d") == (
        f"refused unknown field `{field}`: this sidecar (an image that reports no snapshot schema) is older than "
        "the controller (snapshot schema 0a1b2c3d) that sent it; roll the pods onto the controller's image (until "
        f"then it keeps its last good snapshot); it said: {said}"
    )


def test_the_controller_leaves_other_refusals_and_those_worded_already_as_they_are() -> None:
    worded = older_sidecar("providers.0.caBundle", sidecar_schema="0a1b2c3d")
    for said in (worded, "providers.0.baseUrl: baseURL 'ftp://x' must start with http:// or https://", "unknown"):
        assert explain_refusal(said, sidecar_schema="0a1b2c3d", controller_schema="99999999") == said


class Inner(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    limit_count: int = 2


class Outer(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One docstring."""

    inner: Inner = Inner()
    names: tuple[str, ...] = ()


def test_the_schema_fingerprint_follows_fields_types_and_defaults_only() -> None:
    def variant(default: int = 2, extra: bool = False, kind: type = int) -> str:
        inner = msgspec.defstruct("Inner", [("limit_count", kind, default)], frozen=True, kw_only=True, rename="camel")
        fields: list[tuple[str, object, object]] = [("inner", inner, inner()), ("names", tuple[str, ...], ())]
        if extra:
            fields.append(("flag", bool, False))
        return schema_fingerprint(msgspec.defstruct("Outer", fields, frozen=True, kw_only=True, rename="camel"))

    assert schema_fingerprint(Outer) == variant()  # another module and no docstring: the same schema
    assert len({variant(), variant(default=3), variant(extra=True), variant(kind=float)}) == 4
    assert snapshot_schema() == snapshot_schema() and len(snapshot_schema()) == 8
