"""The apiserver refuses bad ModelProviders (types and their settings, base URLs, prices, capacity)
with a message that names the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.e2e.crd_support import PROVIDER, assert_refused
from tests.harness.cli import Kubectl

pytestmark = pytest.mark.e2e


AZURE = {"type": "azure-openai", "baseURL": "https://r.openai.azure.com", "azure": {"apiVersion": "2024-10-21"}}


def _provider(**spec: Any) -> dict[str, Any]:
    obj = copy.deepcopy(PROVIDER)
    obj["spec"] = spec
    return obj


BAD: dict[str, tuple[dict[str, Any], list[str]]] = {
    "unknown-provider-type": (
        _provider(type="watsonx"),
        ["spec.type", 'Unsupported value: "watsonx"', '"openai-compatible"', '"bedrock"'],
    ),
    "bedrock-without-region": (
        _provider(type="bedrock"),
        ["spec.region", "type bedrock needs a region: spec.bedrock.region or spec.region"],
    ),
    "bedrock-settings-on-openai": (
        _provider(type="openai", bedrock={"region": "us-east-1"}),
        ["spec.bedrock", "spec.bedrock is only allowed when type is bedrock, not openai"],
    ),
    "bedrock-region-that-is-no-aws-region": (
        _provider(type="bedrock", bedrock={"region": "Frankfurt"}),
        ["spec.bedrock.region", '"Frankfurt"', "should match"],
    ),
    "vertex-without-vertex": (
        _provider(type="vertex", region="us-east5"),
        ["spec.vertex", "type vertex needs spec.vertex (with project)"],
    ),
    "vertex-without-region": (
        _provider(type="vertex", vertex={"project": "my-project"}),
        ["spec.region", "type vertex needs a region: spec.vertex.region or spec.region"],
    ),
    "vertex-settings-on-openai": (
        _provider(type="openai", vertex={"project": "my-project", "region": "us-east5"}),
        ["spec.vertex", "spec.vertex is only allowed when type is vertex, not openai"],
    ),
    "vertex-unknown-publisher": (
        _provider(type="vertex", vertex={"project": "my-project", "region": "us-east5", "publisher": "meta"}),
        ["spec.vertex.publisher", 'Unsupported value: "meta"'],
    ),
    "entra-client-secret-without-client": (
        _provider(
            **{**AZURE, "azure": {"apiVersion": "2024-10-21", "entra": {"tenantId": "t"}}},
            credentialsRef={"name": "azure"},
        ),
        ["spec.azure.entra", "spec.azure.entra with a credentialsRef (a client secret) needs tenantId and clientId"],
    ),
    "azure-without-api-version": (_provider(**{**AZURE, "azure": {}}), ["spec.azure.apiVersion", "Required value"]),
    "azure-without-azure": (
        _provider(type="azure-openai", baseURL="https://r.openai.azure.com"),
        ["spec.azure", "Required value", "type azure-openai needs spec.azure (with apiVersion)"],
    ),
    "azure-without-base-url": (
        _provider(**{k: v for k, v in AZURE.items() if k != "baseURL"}),
        ["spec.baseURL", "type azure-openai needs spec.baseURL: it has no default endpoint"],
    ),
    "openai-compatible-without-base-url": (
        _provider(type="openai-compatible", hosting="in-cluster"),
        ["spec.baseURL", "type openai-compatible needs spec.baseURL: it has no default endpoint"],
    ),
    "azure-settings-on-openai": (
        _provider(type="openai", azure={"apiVersion": "2024-10-21"}),
        ["spec.azure", "spec.azure is only allowed when type is azure-openai, not openai"],
    ),
    "base-url-without-scheme": (
        _provider(type="openai", baseURL="api.openai.com/v1"),
        ["spec.baseURL", '"api.openai.com/v1"', "should match '^https?://'"],
    ),
    "unknown-hosting": (_provider(type="openai", hosting="on-prem"), ["spec.hosting", 'Unsupported value: "on-prem"']),
    "negative-price": (
        _provider(type="openai", models=[{"name": "gpt-4o", "inputPricePerMillion": -1}]),
        ["spec.models[0].inputPricePerMillion", "Invalid value: -1", "should be greater than or equal to 0"],
    ),
    "capacity-saying-nothing": (
        _provider(type="openai", capacity=[{"model": "gpt-4o*"}]),
        ["spec.capacity[0]", "capacity for model gpt-4o*: set requestsPerMinute, tokensPerMinute or both"],
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_provider_is_refused_naming_the_field(kubectl: Kubectl, ns: str, case: str) -> None:
    assert_refused(kubectl, ns, *BAD[case])


def test_the_base_providers_of_the_refusals_are_fine(kubectl: Kubectl, ns: str) -> None:
    """So each refusal above is due to its one change."""
    for obj in (PROVIDER, _provider(**AZURE)):
        kubectl.apply(obj, "-n", ns, "--dry-run=server")
    capacity = [{"model": "gpt-4o*", "requestsPerMinute": 500}, {"model": "*", "tokensPerMinute": 1000}]
    kubectl.apply(_provider(type="openai", capacity=capacity), "-n", ns, "--dry-run=server")
    windows = [{"name": "gpt-4o", "contextWindow": 128000, "maxOutputTokens": 16384}]
    kubectl.apply(_provider(type="openai", models=windows), "-n", ns, "--dry-run=server")
