"""The snapshot's wire form: fields at their default left out, read back as the same snapshot, and a
content version that depends on the content alone."""

from __future__ import annotations

import json
from collections.abc import Callable

import msgspec
import pytest

from proxy.snapshot import (
    ModelPricing,
    Provider,
    Retry,
    Rule,
    Snapshot,
    Timeouts,
    content_version,
    parse_snapshot,
    to_wire,
)
from tests.unit.snapshot_samples import plain, rich, written_in_full

SAMPLES = pytest.mark.parametrize("sample", [rich, plain], ids=["every-field-set", "every-default"])


def test_fields_at_their_default_are_left_off_the_wire() -> None:
    wire = json.loads(json.dumps(to_wire(plain())))
    openai, bedrock = wire["providers"][:2]
    assert openai == {"name": "openai", "type": "openai", "baseUrl": "https://api.openai.com/v1"}
    assert bedrock["bedrock"] == {"region": "eu-west-1", "credentials": {"accessKeyId": "AK", "secretAccessKey": "s"}}
    [rule] = wire["routes"][0]["rules"]
    assert set(rule) == {"matchHeaders", "backends", "experiment"}  # no name, retry, timeouts, fallbacks
    assert rule["matchHeaders"] == [{"name": "x-tier"}] and rule["backends"] == [{"provider": "openai", "model": "m"}]
    assert wire["policy"]["guardrails"] == [{"name": "g", "url": "https://guard.example.com/check"}]
    assert wire["limitStore"] == {"url": "redis://redis:6379"}
    assert "version" not in wire  # not yet versioned
    full = json.dumps(written_in_full(plain()))
    assert len(json.dumps(wire)) < len(full) / 2


@SAMPLES
def test_the_wire_reads_back_as_the_same_snapshot_with_the_same_version(sample: Callable[[], Snapshot]) -> None:
    built = sample()
    received = parse_snapshot(json.loads(json.dumps(to_wire(built))))
    assert msgspec.structs.replace(received, version="") == built
    assert received.version == content_version(built)
    assert parse_snapshot(to_wire(received)) == received and to_wire(parse_snapshot(to_wire(received))) == to_wire(
        received
    )


@SAMPLES
def test_every_default_written_out_reads_as_the_same_wire_and_version(sample: Callable[[], Snapshot]) -> None:
    """A controller from before defaults were left out wrote them all: the values decoded from that are
    other objects than the defaults, yet the snapshot writes and hashes the same."""
    built = sample()
    from_full_wire = parse_snapshot(json.loads(json.dumps(written_in_full(built))))
    assert to_wire(from_full_wire) == {**to_wire(built), "version": from_full_wire.version}
    assert from_full_wire.version == content_version(built)


def test_values_built_anew_but_equal_to_the_defaults_are_left_out() -> None:
    anew = Rule(
        name="".join(["de", "fault"]),
        backends=plain().routes[0].rules[0].backends,
        retry=Retry(
            attempts=int("2"),
            retry_on=tuple(["connect-error", "timeout", "429", "5xx"]),
            backoff_base_seconds=float("0.1"),
            backoff_max_seconds=2,  # an int where the field is a float: the same value
            max_retry_after_seconds=float("5"),
        ),
        timeouts=Timeouts(total_seconds=120, first_token_seconds=None, connect_seconds=5.0),
    )
    assert msgspec.to_builtins(anew) == {"backends": ({"provider": "openai", "model": "m"},)}


def test_the_version_follows_the_content_not_the_order_it_was_built_in() -> None:
    def provider(prices: dict[str, ModelPricing]) -> Snapshot:
        return Snapshot(
            providers=(Provider(name="p", type="openai", base_url="https://p.example.com", pricing=prices),)
        )

    a = ModelPricing(input_per_million=1, output_per_million=2)
    b = ModelPricing(input_per_million=3, output_per_million=4)
    assert content_version(provider({"a": a, "b": b})) == content_version(provider({"b": b, "a": a}))
    assert content_version(provider({"a": a})) != content_version(provider({"a": b}))
    rule = plain().routes[0].rules[0]
    once = msgspec.structs.replace(plain(), routes=(msgspec.structs.replace(plain().routes[0], rules=(rule,)),))
    again = msgspec.structs.replace(
        once,
        routes=(
            msgspec.structs.replace(once.routes[0], rules=(msgspec.structs.replace(rule, retry=Retry(attempts=3)),)),
        ),
    )
    assert content_version(once) == content_version(plain()) != content_version(again)


def test_the_versions_of_known_snapshots_stay_what_they_are() -> None:
    """A controller whose versions of the same content differ from its predecessor's re-sends every
    snapshot to every sidecar when it is upgraded. With defaults left out, a new field with a default
    leaves every version as it was; this pins that (update the pins only for a deliberate change)."""
    assert (content_version(rich()), content_version(plain())) == ("dc731a9030a09da4", "a52ca7d2569f1b69")


@SAMPLES
def test_a_dump_shows_every_field_defaults_too_and_no_credential(sample: Callable[[], Snapshot]) -> None:
    """What `/config` shows an operator: the wire leaves defaults out, a dump does not."""
    built = sample()
    dumped, full = built.masked(), written_in_full(built)
    assert set(dumped) == set(full) and set(dumped["policy"]) == set(full["policy"])
    assert [set(route) for route in dumped["routes"]] == [set(route) for route in full["routes"]]
    assert Snapshot(version="1", providers=(), routes=()).masked()["routes"] == []
    assert "<redacted>" in json.dumps(dumped) and json.dumps(dumped) != json.dumps(full)
