import pytest
from msgspec import ValidationError

from proxy.snapshot import BedrockSettings, Provider, Snapshot, content_version, parse_snapshot, problem_text, to_wire

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
    with pytest.raises(AttributeError):
        snapshot.version = "x"  # type: ignore[misc]
    assert isinstance(snapshot, Snapshot)


def test_a_bad_choice_is_named_by_its_field_never_by_its_value():
    bad = {**BASE, "providers": [{**BASE["providers"][0], "hosting": "sk-live-0123456789"}, BASE["providers"][1]]}
    with pytest.raises(ValidationError) as caught:
        parse_snapshot(bad)
    text = problem_text(caught.value)
    assert text.startswith("providers.0.hosting: ") and "sk-live" not in text


def test_a_field_check_names_the_field_where_it_sits():
    bad = {**BASE, "providers": [{**BASE["providers"][0], "baseUrl": "https://user:pw@api.openai.com/v1"}]}
    with pytest.raises(ValidationError) as caught:
        parse_snapshot(bad)
    text = problem_text(caught.value)
    assert text.startswith("providers.0.baseUrl: ") and "must not carry credentials" in text and "pw" not in text


def test_a_struct_built_in_python_is_checked_as_one_decoded():
    with pytest.raises(ValueError, match="region: should match pattern"):
        BedrockSettings(region="EU")
    with pytest.raises(ValueError, match="apiVersion"):
        Provider(name="az", type="azure-openai", base_url="https://x.openai.azure.com")


def test_credentials_are_kept_on_the_wire_and_masked_elsewhere():
    snapshot = parse_snapshot(BASE)
    assert [p["apiKey"] for p in to_wire(snapshot)["providers"]] == ["sk-secret-1", "sk-ant-2"]
    assert [p["apiKey"] for p in snapshot.masked()["providers"]] == ["<redacted>", "<redacted>"]
    assert "sk-secret-1" not in f"{snapshot.providers[0].api_key} {snapshot.providers[0]!r}"
    assert parse_snapshot(to_wire(snapshot)) == snapshot
