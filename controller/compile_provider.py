"""Judging and compiling one ModelProvider, pure: its Secrets resolved into the snapshot's provider
(credentials only as `Secret`s), or a verdict saying what is missing."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass

import proxy.snapshot as snap
from controller.api import ModelProvider, Secret
from controller.workload import Verdict
from shared.provider_types import default_base_url

ACCEPTED = Verdict(True, "Accepted")
RESOLVED = Verdict(True, "ResolvedRefs")


@dataclass(frozen=True, slots=True)
class ProviderVerdict:
    accepted: Verdict
    resolved_refs: Verdict
    provider: snap.Provider | None  # compiled, credentials included; None when unusable
    generation: int = 0  # the generation the verdict speaks of


def _secret_value(secret: Secret, key: str) -> str | None:
    if key in secret.string_data:
        return secret.string_data[key]
    if key in secret.data:
        try:
            return base64.b64decode(secret.data[key], validate=True).decode().strip()
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


# The Secret keys of an AWS access key (a Bedrock provider's credentialsRef Secret).
AWS_KEY_ID, AWS_SECRET_KEY, AWS_SESSION_TOKEN = "accessKeyId", "secretAccessKey", "sessionToken"
# The Secret key of a Google service-account key (JSON), for a vertex provider.
GOOGLE_SERVICE_ACCOUNT_KEY = "serviceAccountKey"
# The Secret key of an Entra ID client secret (an azure-openai provider with spec.azure.entra).
ENTRA_CLIENT_SECRET = "clientSecret"


def judge_provider(provider: ModelProvider, secrets: Mapping[tuple[str, str], Secret]) -> ProviderVerdict:
    spec, namespace = provider.spec, provider.metadata.namespace
    base_url = spec.base_url or default_base_url(spec.type, region=spec.signing_region)
    if base_url is None:
        invalid = Verdict(False, "Invalid", f"type {spec.type} has no default endpoint: set spec.baseURL")
        return ProviderVerdict(invalid, Verdict(True, "ResolvedRefs"), None)
    if spec.type == "azure-openai" and spec.azure is None:
        invalid = Verdict(False, "Invalid", "type azure-openai needs spec.azure.apiVersion")
        return ProviderVerdict(invalid, Verdict(True, "ResolvedRefs"), None)
    api_key: str | None = None
    aws_keys: snap.AwsKeys | None = None
    vertex_key: str | None = None
    if spec.credentials_ref is not None:
        ref = spec.credentials_ref
        secret = secrets.get((namespace, ref.name))
        if secret is None:
            missing = Verdict(
                False,
                "SecretNotFound",
                f"Secret {namespace}/{ref.name} (spec.credentialsRef) does not exist or is not "
                "labelled modelway.io/credentials=true",
            )
            return ProviderVerdict(ACCEPTED, missing, None)
        if spec.type == "bedrock":
            aws_keys = _aws_keys(secret)
        entra = spec.azure.entra is not None if spec.azure is not None else False
        if entra:
            api_key = _secret_value(secret, ENTRA_CLIENT_SECRET) or _secret_value(secret, ref.key)
        elif spec.type == "vertex" and (service_account := _secret_value(secret, GOOGLE_SERVICE_ACCOUNT_KEY)):
            try:
                snap.check_service_account_key(service_account)
            except snap.ConfigProblem as exc:  # says what is wrong, quotes none of it
                bad = Verdict(
                    False, "InvalidSecret", f"Secret {namespace}/{ref.name} {GOOGLE_SERVICE_ACCOUNT_KEY}: {exc}"
                )
                return ProviderVerdict(ACCEPTED, bad, None)
            vertex_key = service_account
        else:
            api_key = None if aws_keys is not None else _secret_value(secret, ref.key)
        if api_key is None and aws_keys is None and vertex_key is None:
            wanted = f"{ref.key!r}" + (f" (or {AWS_KEY_ID} and {AWS_SECRET_KEY})" if spec.type == "bedrock" else "")
            wanted = f"{ENTRA_CLIENT_SECRET!r} (or {ref.key!r})" if entra else wanted
            missing = Verdict(
                False,
                "SecretKeyNotFound",
                f"Secret {namespace}/{ref.name} has no key {wanted} (spec.credentialsRef.key)",
            )
            return ProviderVerdict(ACCEPTED, missing, None)
    try:
        compiled = _compile_provider(
            provider, base_url=base_url, api_key=api_key, aws_keys=aws_keys, vertex_key=vertex_key
        )
    except ValueError as exc:  # what the sidecar would refuse: never let it reach one
        return ProviderVerdict(Verdict(False, "Invalid", snap.problem_text(exc)), RESOLVED, None)
    return ProviderVerdict(ACCEPTED, RESOLVED, compiled)


def _aws_keys(secret: Secret) -> snap.AwsKeys | None:
    key_id, secret_key = _secret_value(secret, AWS_KEY_ID), _secret_value(secret, AWS_SECRET_KEY)
    if not key_id or not secret_key:
        return None
    token = _secret_value(secret, AWS_SESSION_TOKEN)
    return snap.AwsKeys(
        access_key_id=snap.Secret(key_id),
        secret_access_key=snap.Secret(secret_key),
        session_token=snap.Secret(token) if token else None,
    )


def _compile_provider(
    provider: ModelProvider,
    *,
    base_url: str,
    api_key: str | None,
    aws_keys: snap.AwsKeys | None = None,
    vertex_key: str | None = None,
) -> snap.Provider:
    spec, namespace, name = provider.spec, provider.metadata.namespace, provider.metadata.name
    region = spec.signing_region
    bedrock = (
        snap.BedrockSettings(region=region, credentials=aws_keys, api=spec.bedrock.api if spec.bedrock else "converse")
        if spec.type == "bedrock" and region is not None
        else None
    )
    entra_spec = spec.azure.entra if spec.azure is not None else None
    entra = None
    if entra_spec is not None:  # the Secret's value is the client secret, not an API key
        entra = snap.EntraSettings(
            tenant_id=entra_spec.tenant_id,
            client_id=entra_spec.client_id,
            client_secret=snap.Secret(api_key) if api_key is not None else None,
            **({"scope": entra_spec.scope} if entra_spec.scope is not None else {}),
        )
        api_key = None
    vertex = (
        snap.VertexSettings(
            project=spec.vertex.project,
            region=region,
            publisher=spec.vertex.publisher,
            service_account_key=snap.Secret(vertex_key) if vertex_key is not None else None,
        )
        if spec.vertex is not None and region is not None
        else None
    )
    return snap.Provider(
        name=f"{namespace}.{name}",
        type=spec.type,
        base_url=base_url,
        api_key=snap.Secret(api_key) if api_key is not None else None,
        entra=entra,
        vertex=vertex,
        api_version=spec.azure.api_version if spec.azure else None,
        bedrock=bedrock,
        region=spec.region or region,
        jurisdiction=spec.jurisdiction,
        hosting=spec.hosting,
        ca_bundle=spec.tls.ca_bundle if spec.tls is not None else None,
        pricing={
            m.name: snap.ModelPricing(
                input_per_million=m.input_price_per_million,
                output_per_million=m.output_price_per_million,
                cached_input_per_million=m.cached_input_price_per_million,
                cache_write_per_million=m.cache_write_price_per_million,
            )
            for m in spec.models
            if m.input_price_per_million is not None and m.output_price_per_million is not None
        },
        models={
            m.name: snap.ModelWindow(context_window=m.context_window, max_output_tokens=m.max_output_tokens)
            for m in spec.models
            if m.context_window is not None or m.max_output_tokens is not None
        },
        capacity=tuple(
            snap.Capacity(
                key=f"ModelProvider/{namespace}/{name}/capacity/{c.model}",
                model=c.model,
                requests_per_minute=c.requests_per_minute,
                tokens_per_minute=c.tokens_per_minute,
            )
            for c in spec.capacity
        ),
    )
