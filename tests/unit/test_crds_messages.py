"""controller.api refuses what the CRDs' CEL rules refuse, in the same words (the apiserver's: tests/e2e/test_crds.py).

`modelway dev` and the file source read the same YAML as kubectl: a bad object
should read the same there, naming the value and what is allowed.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from controller import api

BACKEND = {"provider": "openai", "model": "gpt-4o"}
BETA = {"name": "beta", "matches": {"headers": [{"name": "x-tier", "value": "beta"}]}, "backends": [BACKEND]}


def _route(**spec: Any) -> dict[str, Any]:
    return {
        "kind": "ModelRoute",
        "metadata": {"name": "r"},
        "spec": {"model": "chat", "rules": [{"backends": [BACKEND]}], **spec},
    }


def _rule(**rule: Any) -> dict[str, Any]:
    return _route(rules=[{"backends": [BACKEND], **rule}])


CASES: dict[str, tuple[dict[str, Any], str]] = {
    "rule name": (
        _rule(name="Beta Testers"),
        "'Beta Testers' is not a DNS label: use lower-case letters, digits "
        "and '-', starting and ending with a letter or digit, e.g. beta-testers",
    ),
    "catch-all first": (
        _route(rules=[{"name": "catch", "backends": [BACKEND]}, BETA]),
        "rule catch has no matches, so it matches every request and hides the rules after it: "
        "only the last rule may be without matches",
    ),
    "fallback is a backend": (
        _rule(fallbacks=[{"provider": "x", "model": "y"}, BACKEND]),
        "fallback openai/gpt-4o is also a backend of this rule: a fallback must differ from "
        "the rule's backends (provider and model)",
    ),
    "value and regex": (
        _rule(matches={"headers": [{"name": "x-tier", "value": "a", "regex": "b"}]}),
        "header x-tier: set at most one of value and regex",
    ),
    "duration": (
        _rule(timeouts={"total": "10 seconds"}),
        "'10 seconds' is not a duration: write numbers with units, e.g. 300ms, 1.5s, 1m30s or 2h",
    ),
    "zero": (_rule(timeouts={"connect": "0s"}), "connect must be longer than 0, not 0s"),
    "first token": (
        _rule(timeouts={"total": "30s", "firstToken": "1m"}),
        "firstToken (1m) must not be longer than total (30s)",
    ),
    "backoff": (
        _rule(retry={"backoffBase": "3s", "backoffMax": "500ms"}),
        "backoffMax (500ms) must not be shorter than backoffBase (3s)",
    ),
    "selector without values": (
        _route(workloadSelector={"matchExpressions": [{"key": "tier", "operator": "In"}]}),
        "operator In needs values (key tier)",
    ),
    "azure on openai": (
        {"kind": "ModelProvider", "metadata": {"name": "p"}, "spec": {"type": "openai", "azure": {"apiVersion": "x"}}},
        "spec.azure is only allowed when type is azure-openai, not openai",
    ),
    "residency": (
        {"kind": "ModelPolicy", "metadata": {"name": "p"}, "spec": {"residency": [{"dataClass": "personal"}]}},
        "a residency rule needs at least one of jurisdictions, regions, hosting; the rule for dataClass "
        "personal has none",
    ),
}


@pytest.mark.parametrize(("obj", "message"), CASES.values(), ids=list(CASES))
def test_api_py_refuses_in_the_apiserver_s_words(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        api.parse_resource(obj)
    assert message in str(caught.value)
