import pytest
from pydantic import ValidationError

from proxy.snapshot import Snapshot, content_version, parse_snapshot

BASE = {
    "providers": [
        {"name": "openai", "type": "openai", "baseUrl": "https://api.openai.com/v1", "apiKey": "sk-secret-1"},
        {"name": "claude", "type": "anthropic", "baseUrl": "https://api.anthropic.com", "apiKey": "sk-ant-2"},
    ],
    "routes": [
        {
            "name": "chat",
            "model": "chat",
            "rules": [
                {
                    "backends": [{"provider": "openai", "model": "gpt-4o"}],
                    "fallbacks": [{"provider": "claude", "model": "claude-sonnet-4-5"}],
                }
            ],
        }
    ],
}


def test_parse_fills_content_version_and_masks_credentials():
    snapshot = parse_snapshot(BASE)
    assert snapshot.version == content_version(snapshot)
    dumped = str(snapshot.masked())
    assert "sk-secret-1" not in dumped and "sk-ant-2" not in dumped
    assert "<redacted>" in dumped
    assert "sk-secret-1" not in repr(snapshot)


def test_rotating_a_credential_changes_the_version():
    other = {**BASE, "providers": [{**BASE["providers"][0], "apiKey": "sk-rotated"}, BASE["providers"][1]]}
    assert parse_snapshot(BASE).version != parse_snapshot(other).version


def test_unknown_provider_is_named():
    bad = {
        **BASE,
        "routes": [{"name": "r", "model": "m", "rules": [{"backends": [{"provider": "nope", "model": "x"}]}]}],
    }
    with pytest.raises(ValidationError, match="unknown provider 'nope'"):
        parse_snapshot(bad)


def test_all_zero_weights_refused():
    bad = {
        **BASE,
        "routes": [
            {"name": "r", "model": "m", "rules": [{"backends": [{"provider": "openai", "model": "x", "weight": 0}]}]}
        ],
    }
    with pytest.raises(ValidationError, match="weight above 0"):
        parse_snapshot(bad)


def test_two_routes_for_one_model_refused():
    route = BASE["routes"][0]
    with pytest.raises(ValidationError, match="more than one route serves"):
        parse_snapshot({**BASE, "routes": [route, {**route, "name": "other"}]})


def test_azure_needs_api_version():
    bad = {"providers": [{"name": "az", "type": "azure-openai", "baseUrl": "https://x.openai.azure.com"}]}
    with pytest.raises(ValidationError, match="apiVersion"):
        parse_snapshot(bad)


def test_snapshot_is_frozen():
    snapshot = parse_snapshot(BASE)
    with pytest.raises(ValidationError):
        snapshot.version = "x"  # type: ignore[misc]
    assert isinstance(snapshot, Snapshot)
