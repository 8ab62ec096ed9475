"""Provider type -> translator class: the one place the sidecar maps a type to its translator.

A provider type is a row of `shared.provider_types.PROVIDER_TYPES` (its operations, wire format,
default endpoint), its translator module, and its line here; the CRD's `spec.type` enum in
`crds/modelway.io_modelproviders.yaml` (copied into the chart by `make chart-crds`) must list it,
and `tests/unit/test_provider_types.py` fails until every one of these agrees. Its tests want a
fake of its wire format under `tests/fakes/`.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.auth.aws_credentials import AwsCredentialSource
from proxy.auth.token_sources import TokenSources
from proxy.providers.anthropic import AnthropicTranslator
from proxy.providers.azure_openai import AzureOpenAITranslator
from proxy.providers.base import Translator
from proxy.providers.bedrock import BedrockTranslator
from proxy.providers.bedrock_anthropic import BedrockAnthropicTranslator
from proxy.providers.gemini import GeminiTranslator
from proxy.providers.openai import OpenAITranslator
from proxy.providers.openai_compatible import OpenAICompatibleTranslator
from proxy.providers.vertex import VertexAnthropicTranslator, VertexGeminiTranslator
from proxy.snapshot import Provider
from shared.provider_types import ProviderType

TRANSLATORS: dict[ProviderType, Callable[[Provider], Translator]] = {
    "openai": OpenAITranslator,
    "openai-compatible": OpenAICompatibleTranslator,
    "azure-openai": AzureOpenAITranslator,
    "anthropic": AnthropicTranslator,
    "gemini": GeminiTranslator,
    "bedrock": BedrockTranslator,
    "vertex": VertexGeminiTranslator,
}


def build_translator(
    provider: Provider, *, aws_identity: AwsCredentialSource | None = None, tokens: TokenSources | None = None
) -> Translator:
    """`aws_identity`: the pod's own AWS credentials, for AWS providers configured without keys;
    `tokens`: the sidecar's OAuth token sources (Entra ID, Google), kept across snapshots."""
    if provider.type == "bedrock":
        if provider.bedrock is not None and provider.bedrock.api == "anthropic-messages":
            return BedrockAnthropicTranslator(provider, pod_identity=aws_identity)
        return BedrockTranslator(provider, pod_identity=aws_identity)
    if provider.type == "azure-openai" and provider.entra is not None:
        return AzureOpenAITranslator(provider, token_source=tokens.for_provider(provider) if tokens else None)
    if provider.type == "vertex":
        source = tokens.for_provider(provider) if tokens else None
        if provider.vertex is not None and provider.vertex.publisher == "anthropic":
            return VertexAnthropicTranslator(provider, token_source=source)
        return VertexGeminiTranslator(provider, token_source=source)
    return TRANSLATORS[provider.type](provider)
