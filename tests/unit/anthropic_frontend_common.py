"""Shared by test_anthropic_frontend.py (requests) and test_anthropic_frontend_output.py
(rendering, streaming, the SDK): the front end under test and two request fixtures."""

from __future__ import annotations

from typing import Any

from proxy.frontends.anthropic_messages import AnthropicFrontend

FRONTEND = AnthropicFrontend()
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}
