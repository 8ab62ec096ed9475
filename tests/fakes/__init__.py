"""Local fake LLM providers (OpenAI + Azure OpenAI, Anthropic, Gemini, Bedrock) speaking each
provider's documented wire format, with scripted failures and request recording.

See ``behaviour.py`` for the control API, ``answers.py`` for the deterministic
answers, ``process.py`` / ``fixtures.py`` to run them from tests.
"""
