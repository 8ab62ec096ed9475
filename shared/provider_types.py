"""The provider types Modelway speaks: one table, the source of every other list of them.

The sidecar (`proxy.snapshot`, `proxy.providers.registry`) and the controller (`controller.api`,
`controller.compile`) read their types, operations and default endpoints from here; the CRD's
`spec.type` enum and its base-URL rule are YAML, so `tests/unit/test_provider_types.py` checks
them (and the registry's translators) against this table. A new provider is its translator
module, its row here and its line in the registry; the test names whatever else is missing.
"""

from __future__ import annotations

from typing import Literal

import msgspec

ProviderType = Literal["openai", "azure-openai", "anthropic", "gemini", "openai-compatible", "bedrock", "vertex"]
# "responses": the OpenAI Responses API served by the provider itself (state, built-in tools), so a
# Responses request goes to it as sent; other types get it translated to chat.
Operation = Literal["chat", "embeddings", "responses"]
# The wire format a type's translator speaks (several types share one).
WireFormat = Literal["openai-chat", "anthropic-messages", "gemini", "bedrock-converse"]
REGION = "{region}"  # in a default base URL: the provider's region, filled in by the controller


class ProviderKind(msgspec.Struct, frozen=True):
    operations: frozenset[Operation]
    wire_format: WireFormat
    # None: the ModelProvider must give spec.baseURL; with REGION in it: spec.baseURL or a region
    default_base_url: str | None
    auth_header: str  # where its API key goes (`authorization` carries "Bearer <key>")
    # the endpoint of the `global` location, for a per-region type that has one
    global_base_url: str | None = None


PROVIDER_TYPES: dict[ProviderType, ProviderKind] = {
    "openai": ProviderKind(
        frozenset({"chat", "embeddings", "responses"}), "openai-chat", "https://api.openai.com/v1", "authorization"
    ),
    "azure-openai": ProviderKind(frozenset({"chat", "embeddings", "responses"}), "openai-chat", None, "api-key"),
    "anthropic": ProviderKind(frozenset({"chat"}), "anthropic-messages", "https://api.anthropic.com", "x-api-key"),
    "gemini": ProviderKind(
        frozenset({"chat", "embeddings"}), "gemini", "https://generativelanguage.googleapis.com", "x-goog-api-key"
    ),
    # vLLM, Ollama, LiteLLM and anything else speaking OpenAI's API at its own address.
    "openai-compatible": ProviderKind(frozenset({"chat", "embeddings"}), "openai-chat", None, "authorization"),
    # Amazon Bedrock Runtime, one endpoint per AWS region; SigV4 (or a Bedrock API key as a bearer
    # token) in `authorization`.
    "bedrock": ProviderKind(
        frozenset({"chat"}), "bedrock-converse", f"https://bedrock-runtime.{REGION}.amazonaws.com", "authorization"
    ),
    # Google Vertex AI, one endpoint per location: Gemini (generateContent, Gemini's body) or, with
    # publisher anthropic, Claude (rawPredict, Anthropic's body); an OAuth access token in
    # `authorization`, or an API key (express mode) in `x-goog-api-key`.
    "vertex": ProviderKind(
        frozenset({"chat"}),
        "gemini",
        f"https://{REGION}-aiplatform.googleapis.com",
        "x-goog-api-key",
        global_base_url="https://aiplatform.googleapis.com",
    ),
}


def serves(provider_type: str, operation: str) -> bool:
    kind = PROVIDER_TYPES.get(provider_type)  # type: ignore[call-overload]
    return kind is not None and operation in kind.operations


def needs_base_url(provider_type: str) -> bool:
    kind = PROVIDER_TYPES.get(provider_type)  # type: ignore[call-overload]
    return kind is not None and kind.default_base_url is None


def needs_region(provider_type: str) -> bool:
    """The type's endpoint (and signing) is per region: a ModelProvider gives one (or spec.baseURL and one)."""
    kind = PROVIDER_TYPES.get(provider_type)  # type: ignore[call-overload]
    return kind is not None and kind.default_base_url is not None and REGION in kind.default_base_url


def default_base_url(provider_type: str, *, region: str | None = None) -> str | None:
    """The type's endpoint; None when it has none, or when it is per region and no region is given."""
    kind: ProviderKind | None = PROVIDER_TYPES.get(provider_type)  # type: ignore[call-overload]
    if kind is None or kind.default_base_url is None:
        return None
    if REGION in kind.default_base_url:
        if region == "global" and kind.global_base_url is not None:
            return kind.global_base_url
        return kind.default_base_url.replace(REGION, region) if region else None
    return kind.default_base_url
