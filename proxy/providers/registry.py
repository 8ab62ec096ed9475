"""Provider type -> translator class: the one place the sidecar maps a type to its translator.

A provider type is a row of `shared.provider_types.PROVIDER_TYPES` (its operations, wire format,
default endpoint), its translator module, and its line here; the CRD's `spec.type` enum in
`crds/modelway.io_modelproviders.yaml` (copied into the chart by `make chart-crds`) must list it,
and `tests/unit/test_provider_types.py` fails until every one of these agrees. Its tests want a
fake of its wire format under `tests/fakes/`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from proxy.auth.token_sources import TokenSources
from proxy.providers.base import Translator
from proxy.snapshot import Provider
from shared.provider_types import ProviderType

if TYPE_CHECKING:  # the AWS signing code is loaded only for providers that sign
    from proxy.auth.aws_credentials import AwsCredentialSource

# "module:class" of each type's translator, imported when a snapshot first names the type: a
# sidecar holds the code of the providers it calls (often one or two), not of all of them.
TRANSLATORS: dict[ProviderType, str] = {
    "openai": "proxy.providers.openai:OpenAITranslator",
    "openai-compatible": "proxy.providers.openai_compatible:OpenAICompatibleTranslator",
    "azure-openai": "proxy.providers.azure_openai:AzureOpenAITranslator",
    "anthropic": "proxy.providers.anthropic:AnthropicTranslator",
    "gemini": "proxy.providers.gemini:GeminiTranslator",
    "bedrock": "proxy.providers.bedrock:BedrockTranslator",
    "vertex": "proxy.providers.vertex:VertexGeminiTranslator",
}
_BEDROCK_ANTHROPIC = "proxy.providers.bedrock_anthropic:BedrockAnthropicTranslator"
_VERTEX_ANTHROPIC = "proxy.providers.vertex:VertexAnthropicTranslator"


def translator_class(path: str) -> Callable[..., Translator]:
    """The class at "module:class" (a configuration-time import, once per module)."""
    module, _, name = path.partition(":")
    return cast(Callable[..., Translator], getattr(importlib.import_module(module), name))


def build_translator(
    provider: Provider, *, aws_identity: AwsCredentialSource | None = None, tokens: TokenSources | None = None
) -> Translator:
    """`aws_identity`: the pod's own AWS credentials, for AWS providers configured without keys;
    `tokens`: the sidecar's OAuth token sources (Entra ID, Google), kept across snapshots."""
    if provider.type == "bedrock":
        anthropic = provider.bedrock is not None and provider.bedrock.api == "anthropic-messages"
        bedrock = translator_class(_BEDROCK_ANTHROPIC if anthropic else TRANSLATORS["bedrock"])
        return bedrock(provider, pod_identity=aws_identity)
    if provider.type == "azure-openai" and provider.entra is not None:
        azure = translator_class(TRANSLATORS["azure-openai"])
        return azure(provider, token_source=tokens.for_provider(provider) if tokens else None)
    if provider.type == "vertex":
        source = tokens.for_provider(provider) if tokens else None
        anthropic = provider.vertex is not None and provider.vertex.publisher == "anthropic"
        vertex = translator_class(_VERTEX_ANTHROPIC if anthropic else TRANSLATORS["vertex"])
        return vertex(provider, token_source=source)
    return translator_class(TRANSLATORS[provider.type])(provider)
