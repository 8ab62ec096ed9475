"""A bedrock ModelProvider compiled: its region's endpoint, its AWS keys (or API key) from the Secret,
and the objects the API refuses before they reach a sidecar."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from controller.api import parse_resource
from controller.compile import Workload, compile_workload, judge
from proxy.snapshot import Provider
from tests.unit.test_compile import provider, resources, route, secret

MODEL = "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"


def compiled(*items: Any) -> Provider:
    view = resources(*items, route("chat", "chat", [{"provider": "bedrock", "model": MODEL}]))
    (only,) = compile_workload(judge(view), Workload("team-a")).providers
    return only


def test_the_region_gives_the_endpoint_and_the_keys_come_from_the_secret() -> None:
    p = compiled(
        provider("bedrock", type_="bedrock", bedrock={"region": "eu-central-1"}, jurisdiction="eu"),
        secret(accessKeyId="AKIAEXAMPLEEXAMPLE00", secretAccessKey="s3cret/KEY+value", sessionToken="tok"),
    )
    assert p.base_url == "https://bedrock-runtime.eu-central-1.amazonaws.com"
    assert p.bedrock is not None and p.bedrock.region == "eu-central-1" and p.region == "eu-central-1"
    keys = p.bedrock.credentials
    assert keys is not None and keys.secret_access_key.get_secret_value() == "s3cret/KEY+value"
    assert keys.session_token is not None and keys.session_token.get_secret_value() == "tok"
    assert p.api_key is None


def test_spec_region_serves_when_there_is_no_bedrock_block() -> None:
    p = compiled(
        provider("bedrock", type_="bedrock", region="us-west-2"),
        secret(accessKeyId="AKIAEXAMPLEEXAMPLE00", secretAccessKey="s"),
    )
    assert p.base_url == "https://bedrock-runtime.us-west-2.amazonaws.com"
    assert p.bedrock is not None and p.bedrock.credentials is not None and p.bedrock.credentials.session_token is None


def test_a_base_url_wins_over_the_default_endpoint_and_signing_keeps_the_region() -> None:
    vpce = "https://vpce-0123-abcd.bedrock-runtime.eu-west-1.vpce.amazonaws.com"
    p = compiled(
        provider("bedrock", type_="bedrock", baseURL=vpce, bedrock={"region": "eu-west-1"}),
        secret(accessKeyId="AKIAEXAMPLEEXAMPLE00", secretAccessKey="s"),
    )
    assert p.base_url == vpce and p.bedrock is not None and p.bedrock.region == "eu-west-1"


def test_without_aws_keys_the_secret_key_is_a_bedrock_api_key() -> None:
    p = compiled(provider("bedrock", type_="bedrock", region="us-east-1"), secret(apiKey="ABSK-bedrock-api-key"))
    assert p.api_key is not None and p.api_key.get_secret_value() == "ABSK-bedrock-api-key"
    assert p.bedrock is not None and p.bedrock.credentials is None


def test_a_secret_with_neither_says_what_it_lacks() -> None:
    view = resources(provider("bedrock", type_="bedrock", region="us-east-1"), secret(other="x"))
    refs = judge(view).providers[("ModelProvider", "team-a", "bedrock")].resolved_refs
    assert (refs.ok, refs.reason) == (False, "SecretKeyNotFound")
    assert "accessKeyId and secretAccessKey" in refs.message


def test_a_region_that_is_no_aws_region_is_refused_by_the_compiler() -> None:
    view = resources(provider("bedrock", type_="bedrock", region="EU"), secret(apiKey="k"))
    accepted = judge(view).providers[("ModelProvider", "team-a", "bedrock")].accepted
    assert not accepted.ok and "region" in accepted.message


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "bedrock"}, "needs a region"),
        ({"type": "openai", "bedrock": {"region": "us-east-1"}}, "only allowed when type is bedrock"),
        ({"type": "bedrock", "bedrock": {"region": "not a region"}}, "pattern"),
    ],
)
def test_the_api_refuses(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_resource({"kind": "ModelProvider", "metadata": {"name": "b", "namespace": "n"}, "spec": spec})
