"""Every list of provider types agrees with the one table, `shared.provider_types.PROVIDER_TYPES`.

A provider type added to the table but not to the CRD (or the registry, or the other way round)
fails here, naming what is missing, before a ModelProvider of that type is refused by the API
server or compiled into a snapshot no sidecar can serve.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
import yaml

from controller import api
from proxy import snapshot
from proxy.providers.base import UnsupportedOperation
from proxy.providers.registry import TRANSLATORS, build_translator
from shared.provider_types import PROVIDER_TYPES, ProviderType, default_base_url, needs_base_url, needs_region, serves

REPO = Path(__file__).resolve().parents[2]
CRD_COPIES = (REPO / "crds", REPO / "charts" / "modelway" / "crds")
TABLE = set(PROVIDER_TYPES)


def _spec_schema(folder: Path) -> dict:
    crd = yaml.safe_load((folder / "modelway.io_modelproviders.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]  # type: ignore[no-any-return]


def _type_schema(folder: Path) -> tuple[set[str], str]:
    spec = _spec_schema(folder)
    rule = next(r["rule"] for r in spec["x-kubernetes-validations"] if "has(self.baseURL)" in r["rule"])
    return set(spec["properties"]["type"]["enum"]), rule


def test_the_literal_lists_the_table() -> None:
    assert set(typing.get_args(ProviderType)) == TABLE
    # the sidecar's contract and the controller's API mirror name the same type, not copies of it
    assert typing.get_type_hints(snapshot.Provider)["type"] is ProviderType
    assert api.ModelProviderSpec.model_fields["type"].annotation is ProviderType


def test_every_type_has_a_translator() -> None:
    assert set(TRANSLATORS) == TABLE


@pytest.mark.parametrize("folder", CRD_COPIES, ids=lambda f: str(f.relative_to(REPO)))
def test_the_crd_enum_and_base_url_rule_follow_the_table(folder: Path) -> None:
    enum, rule = _type_schema(folder)
    assert enum == TABLE, f"spec.type enum in {folder.name}/ differs from shared/provider_types.py"
    listed = set(re.findall(r"'([a-z-]+)'", rule))
    assert listed == {t for t in TABLE if needs_base_url(t)}, f"the baseURL rule names {sorted(listed)}"


@pytest.mark.parametrize("folder", CRD_COPIES, ids=lambda f: str(f.relative_to(REPO)))
def test_the_crd_region_rule_names_the_per_region_types(folder: Path) -> None:
    rules = [r["rule"] for r in _spec_schema(folder)["x-kubernetes-validations"] if "has(self.region)" in r["rule"]]
    listed = {t for rule in rules for t in re.findall(r"self\.type != '([a-z-]+)'", rule)}
    assert listed == {t for t in TABLE if needs_region(t)}


def test_a_per_region_default_endpoint_needs_its_region() -> None:
    assert default_base_url("bedrock", region="eu-central-1") == "https://bedrock-runtime.eu-central-1.amazonaws.com"
    assert default_base_url("bedrock") is None  # never a URL with a placeholder in it
    assert default_base_url("openai", region="eu-central-1") == "https://api.openai.com/v1"
    assert default_base_url("vertex", region="europe-west4") == "https://europe-west4-aiplatform.googleapis.com"
    assert default_base_url("vertex", region="global") == "https://aiplatform.googleapis.com"


@pytest.mark.parametrize("provider_type", sorted(TABLE))
def test_a_translator_serves_exactly_the_operations_the_table_says(provider_type: ProviderType) -> None:
    kind = PROVIDER_TYPES[provider_type]
    provider = snapshot.Provider(
        name="ns.p",
        type=provider_type,
        base_url=default_base_url(provider_type, region="us-east-1") or "http://127.0.0.1:9/v1",
        api_key="sk-test",
        api_version="2024-10-21" if provider_type == "azure-openai" else None,
        bedrock=snapshot.BedrockSettings(region="us-east-1") if provider_type == "bedrock" else None,
        vertex=snapshot.VertexSettings(project="my-project", region="us-east-1") if provider_type == "vertex" else None,
    )
    translator = build_translator(provider)
    try:
        translator.embeddings_request({"model": "m", "input": "hello"}, model="m")
        embeds = True
    except UnsupportedOperation:
        embeds = False
    assert embeds == serves(provider_type, "embeddings")
    assert serves(provider_type, "chat")
    # every type takes chat (the internal form is OpenAI's chat shape); its key goes where the table says
    upstream = translator.chat_request(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, model="m", stream=False
    )
    assert kind.auth_header in {name.lower() for name in upstream.headers}
    if serves(provider_type, "responses"):  # a Responses request goes to the provider as sent
        sent = translator.responses_request({"model": "app", "input": "hi"}, model="m", stream=False)  # type: ignore[attr-defined]
        assert sent.url.endswith("/responses") and kind.auth_header in {name.lower() for name in sent.headers}


def test_unknown_types_serve_nothing() -> None:
    assert not serves("bedrock-someday", "chat")
    assert not needs_base_url("bedrock-someday")
