"""Provider type -> translator class. Adding a provider is one module and one line here."""

from __future__ import annotations

from collections.abc import Callable

from proxy.providers.anthropic import AnthropicTranslator
from proxy.providers.azure_openai import AzureOpenAITranslator
from proxy.providers.base import Translator
from proxy.providers.gemini import GeminiTranslator
from proxy.providers.openai import OpenAITranslator
from proxy.providers.openai_compatible import OpenAICompatibleTranslator
from proxy.snapshot import Provider, ProviderType

TRANSLATORS: dict[ProviderType, Callable[[Provider], Translator]] = {
    "openai": OpenAITranslator,
    "openai-compatible": OpenAICompatibleTranslator,
    "azure-openai": AzureOpenAITranslator,
    "anthropic": AnthropicTranslator,
    "gemini": GeminiTranslator,
}


def build_translator(provider: Provider) -> Translator:
    return TRANSLATORS[provider.type](provider)
