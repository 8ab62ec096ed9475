"""Self-hosted servers that speak the OpenAI wire format (vLLM, Ollama, llama.cpp, ...).

Same wire format as OpenAI; the key is optional and the provider name is our own.
"""

from __future__ import annotations

from proxy.providers.openai import OpenAITranslator


class OpenAICompatibleTranslator(OpenAITranslator):
    system = "openai-compatible"
