"""What the status tests share: a route and a provider as the API server would serve them, and verdicts."""

from __future__ import annotations

from typing import Any

from controller.api import ModelRoute, parse_resource
from controller.compile import RouteVerdict, Verdict
from controller.compile_provider import ACCEPTED, RESOLVED

KEY = ("ModelRoute", "default", "chat")
PKEY = ("ModelProvider", "default", "openai")
MISSING = Verdict(False, "BackendNotFound", "rule default backends: ModelProvider default/ghost not found")
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"


def route(generation: int = 1, provider: str = "openai", uid: str = "uid-chat") -> ModelRoute:
    obj = {
        "kind": "ModelRoute",
        "metadata": {"name": "chat", "namespace": "default", "generation": generation, "uid": uid},
        "spec": {"model": "chat", "rules": [{"backends": [{"provider": provider, "model": "gpt-4o"}]}]},
    }
    return parse_resource(obj)  # type: ignore[return-value]


def provider(generation: int = 1) -> Any:
    return parse_resource(
        {
            "kind": "ModelProvider",
            "metadata": {"name": "openai", "namespace": "default", "generation": generation, "uid": "uid-p"},
            "spec": {"type": "openai"},
        }
    )


def good(generation: int = 4) -> RouteVerdict:
    return RouteVerdict(ACCEPTED, RESOLVED, generation, route(generation))


def by_type(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}
