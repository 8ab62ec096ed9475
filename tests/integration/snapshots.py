"""The snapshot the integration tests and `make demo` run the sidecar on: every provider
type, pointed at the local fakes, and routes that exercise routing, retries and fallback."""

from __future__ import annotations

from typing import Any

from tests.fakes.server import DEFAULT_KEYS


def _backend(provider: str, model: str, **extra: Any) -> dict[str, Any]:
    return {"provider": provider, "model": model, **extra}


def _route(model: str, backends: list[dict[str, Any]], **rule: Any) -> dict[str, Any]:
    return {"name": model, "model": model, "rules": [{"name": "default", "backends": backends, **rule}]}


FAST_RETRY = {"attempts": 3, "backoffBaseSeconds": 0.01, "backoffMaxSeconds": 0.05}
ONE_TRY = {"attempts": 1}


def build_snapshot(openai_url: str, anthropic_url: str, gemini_url: str) -> dict[str, Any]:
    providers = [
        {
            "name": "oai",
            "type": "openai",
            "baseUrl": openai_url + "/v1",
            "apiKey": DEFAULT_KEYS["openai"],
            "pricing": {"gpt-4o": {"inputPerMillion": 2.5, "outputPerMillion": 10}},
        },
        {
            "name": "azure",
            "type": "azure-openai",
            "baseUrl": openai_url,
            "apiVersion": "2024-10-21",
            "apiKey": DEFAULT_KEYS["openai"],
        },
        {"name": "local", "type": "openai-compatible", "baseUrl": openai_url + "/v1", "apiKey": DEFAULT_KEYS["openai"]},
        {"name": "claude", "type": "anthropic", "baseUrl": anthropic_url, "apiKey": DEFAULT_KEYS["anthropic"]},
        {"name": "gem", "type": "gemini", "baseUrl": gemini_url, "apiKey": DEFAULT_KEYS["gemini"]},
        {"name": "nowhere", "type": "openai", "baseUrl": "http://127.0.0.1:9/v1", "apiKey": "sk-nowhere"},
        {"name": "badkey", "type": "openai", "baseUrl": openai_url + "/v1", "apiKey": "sk-wrong-key"},
    ]
    routes = [
        _route("gpt", [_backend("oai", "gpt-4o")]),
        _route("claude", [_backend("claude", "claude-sonnet-4-5")]),
        _route("gemini", [_backend("gem", "gemini-2.5-flash")]),
        _route("azure", [_backend("azure", "my-gpt4o-deployment")]),
        _route("local", [_backend("local", "llama3.1")]),
        _route("embed", [_backend("oai", "text-embedding-3-small")]),
        _route("embed-gemini", [_backend("gem", "text-embedding-004")]),
        _route("embed-claude", [_backend("claude", "claude-sonnet-4-5")], retry=ONE_TRY),
        _route(
            "resilient", [_backend("oai", "gpt-4o")], fallbacks=[_backend("claude", "claude-sonnet-4-5")], retry=ONE_TRY
        ),
        _route("retrying", [_backend("oai", "gpt-4o")], retry=FAST_RETRY),
        _route("down", [_backend("nowhere", "gpt-4o")], fallbacks=[_backend("gem", "gemini-2.5-flash")], retry=ONE_TRY),
        _route(
            "rejected",
            [_backend("badkey", "gpt-4o")],
            fallbacks=[_backend("claude", "claude-sonnet-4-5")],
            retry=ONE_TRY,
        ),
        _route(
            "doomed", [_backend("oai", "gpt-4o")], fallbacks=[_backend("claude", "claude-sonnet-4-5")], retry=ONE_TRY
        ),
        _route(
            "slow",
            [_backend("oai", "gpt-4o")],
            fallbacks=[_backend("claude", "claude-sonnet-4-5")],
            retry=ONE_TRY,
            timeouts={"totalSeconds": 3, "firstTokenSeconds": 0.5},
        ),
        _route("impatient", [_backend("oai", "gpt-4o")], retry=ONE_TRY, timeouts={"totalSeconds": 0.5}),
        _route("split", [_backend("oai", "gpt-4o"), _backend("claude", "claude-sonnet-4-5")], retry=ONE_TRY),
        {
            "name": "tiered",
            "model": "tiered",
            "rules": [
                {
                    "name": "beta",
                    "matchHeaders": [{"name": "x-tier", "value": "beta"}],
                    "backends": [_backend("claude", "claude-sonnet-4-5")],
                },
                {"name": "default", "backends": [_backend("oai", "gpt-4o")]},
            ],
        },
    ]
    return {"providers": providers, "routes": routes}
