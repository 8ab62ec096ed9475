"""Provider type -> translator class: the one place the sidecar maps a type to its translator.

Adding a provider type takes its translator module and a line here, and the type in every
place that names the types: `ProviderType` in `proxy/snapshot.py` and `controller/api.py`,
the `spec.type` enum in `crds/modelway.io_modelproviders.yaml` (copied into the chart by
`make chart-crds`), and `controller/compile.py`: the operations it serves (`OPERATIONS`)
and, for a public API, its default base URL (`DEFAULT_BASE_URLS`). Its tests want a fake
of its wire format under `tests/fakes/`.
"""

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
