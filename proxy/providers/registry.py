"""Provider type -> translator class. Adding a provider is one module and one line here."""

from __future__ import annotations

from collections.abc import Callable

from proxy.providers.azure_openai import AzureOpenAITranslator
from proxy.providers.base import Translator
from proxy.providers.openai import OpenAITranslator
from proxy.providers.openai_compatible import OpenAICompatibleTranslator
from proxy.snapshot import Provider, ProviderType


def _anthropic(provider: Provider) -> Translator:
    from proxy.providers.anthropic import AnthropicTranslator

    return AnthropicTranslator(provider)


def _gemini(provider: Provider) -> Translator:
    from proxy.providers.gemini import GeminiTranslator

    return GeminiTranslator(provider)


TRANSLATORS: dict[ProviderType, Callable[[Provider], Translator]] = {
    "openai": OpenAITranslator,
    "openai-compatible": OpenAICompatibleTranslator,
    "azure-openai": AzureOpenAITranslator,
    "anthropic": _anthropic,
    "gemini": _gemini,
}


def build_translator(provider: Provider) -> Translator:
    return TRANSLATORS[provider.type](provider)
