"""Snapshots that hold every struct of the contract, for the wire and compatibility tests.

Numbers are of their field's type (a float field holds a float), as the controller builds them
and a sidecar decodes them: the wire writes an int as `10` and a float as `10.0`.

`rich` sets every field away from its default; `plain` leaves every field it can at its default.
Neither uses a field newer than the recorded previous schema (`previous_snapshot_schema.json`):
a sidecar of that schema must read both as this code means them.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from proxy.snapshot import (
    Arm,
    AwsKeys,
    Backend,
    BackendDenial,
    BackendRedaction,
    BedrockSettings,
    Capacity,
    Denial,
    EntraSettings,
    Experiment,
    Guardrail,
    HeaderMatch,
    Limit,
    LimitStore,
    ModelPricing,
    Policy,
    Provider,
    Redaction,
    RedactionPattern,
    RerouteBackend,
    Retry,
    Route,
    RouteDenial,
    Rule,
    Secret,
    Snapshot,
    Timeouts,
    VertexSettings,
)

SERVICE_ACCOUNT_KEY = json.dumps(
    {
        "type": "service_account",
        "client_email": "gateway@my-project.iam.gserviceaccount.com",
        "private_key": "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n",
    }
)
DENIAL = Denial(policy="ModelPolicy team-a/eu-only", reason="outside the EU")


def rich() -> Snapshot:
    providers = (
        Provider(
            name="openai",
            type="openai",
            base_url="https://api.openai.com/v1",
            api_key=Secret("sk-rich-openai"),
            region="us-east",
            jurisdiction="US",
            hosting="vpc",
            pricing={
                "gpt-4o": ModelPricing(
                    input_per_million=2.5,
                    output_per_million=10.0,
                    cached_input_per_million=1.25,
                    cache_write_per_million=3.75,
                )
            },
            capacity=(
                Capacity(
                    key="ModelProvider/team-a/openai/capacity/gpt-*",
                    model="gpt-*",
                    requests_per_minute=600,
                    tokens_per_minute=200_000,
                ),
            ),
        ),
        Provider(
            name="azure",
            type="azure-openai",
            base_url="https://team-a.openai.azure.com",
            api_version="2024-10-21",
            entra=EntraSettings(
                tenant_id="tenant",
                client_id="client",
                client_secret=Secret("entra-secret"),
                scope="https://example.com/.default",
            ),
        ),
        Provider(
            name="bedrock",
            type="bedrock",
            base_url="https://bedrock-runtime.eu-west-1.amazonaws.com",
            bedrock=BedrockSettings(
                region="eu-west-1",
                credentials=AwsKeys(
                    access_key_id=Secret("AKIAEXAMPLE"),
                    secret_access_key=Secret("aws-secret"),
                    session_token=Secret("tok"),
                ),
                api="anthropic-messages",
            ),
        ),
        Provider(
            name="vertex",
            type="vertex",
            base_url="https://europe-west4-aiplatform.googleapis.com",
            vertex=VertexSettings(
                project="my-project",
                region="europe-west4",
                publisher="anthropic",
                service_account_key=Secret(SERVICE_ACCOUNT_KEY),
            ),
        ),
    )
    experiment = Experiment(
        name="team-a/chat/beta@1",
        arms=(
            Arm(name="control", weight=3, backends=(Backend(provider="openai", model="gpt-4o"),)),
            Arm(name="claude", weight=1, backends=(Backend(provider="bedrock", model="claude"),)),
        ),
        sticky_header="x-user",
    )
    beta = Rule(
        name="beta",
        match_headers=(HeaderMatch(name="x-tier", value="beta"), HeaderMatch(name="x-user", regex="^u-[0-9]+$")),
        backends=(Backend(provider="openai", model="gpt-4o", weight=3), Backend(provider="bedrock", model="claude")),
        fallbacks=(Backend(provider="vertex", model="claude-sonnet", weight=2),),
        retry=Retry(
            attempts=3,
            retry_on=("429",),
            backoff_base_seconds=0.2,
            backoff_max_seconds=1.0,
            max_retry_after_seconds=2.0,
        ),
        timeouts=Timeouts(total_seconds=60.0, first_token_seconds=10.0, connect_seconds=2.5),
        experiment=experiment,
    )
    routes = (
        Route(
            name="team-a/chat",
            model="chat",
            rules=(
                beta,
                Rule(
                    name="rest",
                    backends=(
                        Backend(provider="azure", model="gpt-4o-mini"),
                        Backend(provider="openai", model="gpt-4o-mini", weight=0),
                    ),
                ),
            ),
        ),
    )
    policy = Policy(
        workload="team-a/app",
        policies=("ModelPolicy team-a/eu-only", "ClusterModelPolicy org"),
        default_class="personal",
        detect_personal_data=True,
        denied_routes=(RouteDenial(model="secret-model", denial=DENIAL),),
        denied_backends=(
            BackendDenial(provider="openai", model="gpt-4o", data_classes=("restricted",), denial=DENIAL),
        ),
        redacted_backends=(
            BackendRedaction(
                provider="bedrock",
                model="claude",
                data_classes=("personal",),
                policy="ModelPolicy team-a/eu-only",
                redaction=Redaction(
                    kinds=("email", "iban"),
                    patterns=(RedactionPattern(name="ticket", regex="TCK-[0-9]{6}"),),
                    restore=False,
                ),
            ),
        ),
        limits=(
            Limit(
                policy="ModelPolicy team-a/caps",
                name="caps",
                key="ModelPolicy/team-a/caps/caps/workload/team-a/app",
                routes=("chat*",),
                providers=("openai",),
                models=("gpt-*",),
                requests_per_minute=100,
                tokens_per_minute=100_000,
                input_tokens_per_minute=80_000,
                output_tokens_per_minute=20_000,
                concurrent_requests=8,
                usd_per_day=10.5,
                usd_per_month=200.0,
                on_budget_spent="reroute",
                reroute_to=(RerouteBackend(provider="azure", model="gpt-4o-mini"),),
                failure_mode="closed",
            ),
        ),
        guardrails=(
            Guardrail(
                name="moderation",
                policy="ClusterModelPolicy org",
                url="https://guard.example.com/v1/moderations",
                kind="openai-moderation",
                phases=("request",),
                timeout_ms=800,
                failure_mode="open",
                data_classes=("personal", "restricted"),
                routes=("chat*",),
                stream_check_chars=200,
                stream_window_chars=0,
            ),
        ),
    )
    store = LimitStore(
        url=Secret("rediss://:redis-pw@redis.modelway-system:6379/0"),
        cluster=True,
        timeout_seconds=0.5,
        key_prefix="mw",
    )
    return Snapshot(providers=providers, routes=routes, policy=policy, limit_store=store)


def plain() -> Snapshot:
    """Every struct there, every field that has a default left at it."""
    providers = (
        Provider(name="openai", type="openai", base_url="https://api.openai.com/v1"),
        Provider(
            name="bedrock",
            type="bedrock",
            base_url="https://bedrock-runtime.eu-west-1.amazonaws.com",
            bedrock=BedrockSettings(
                region="eu-west-1", credentials=AwsKeys(access_key_id=Secret("AK"), secret_access_key=Secret("s"))
            ),
        ),
        Provider(
            name="vertex",
            type="vertex",
            base_url="https://europe-west4-aiplatform.googleapis.com",
            vertex=VertexSettings(project="my-project", region="europe-west4"),
            pricing={"gemini": ModelPricing(input_per_million=1.0, output_per_million=2.0)},
            capacity=(Capacity(key="k", model="*", requests_per_minute=1),),
        ),
        Provider(
            name="azure",
            type="azure-openai",
            base_url="https://team-a.openai.azure.com",
            api_version="2024-10-21",
            entra=EntraSettings(),
        ),
    )
    experiment = Experiment(
        name="e",
        arms=(
            Arm(name="a", backends=(Backend(provider="openai", model="m"),)),
            Arm(name="b", backends=(Backend(provider="openai", model="m"),)),
        ),
    )
    rule = Rule(
        backends=(Backend(provider="openai", model="m"),),
        match_headers=(HeaderMatch(name="x-tier"),),
        retry=Retry(),
        timeouts=Timeouts(),
        experiment=experiment,
    )
    policy = Policy(
        denied_routes=(RouteDenial(model="x", denial=DENIAL),),
        denied_backends=(BackendDenial(provider="openai", model="m", data_classes=("restricted",), denial=DENIAL),),
        redacted_backends=(
            BackendRedaction(
                provider="openai",
                model="m",
                data_classes=("personal",),
                policy="p",
                redaction=Redaction(patterns=(RedactionPattern(name="ticket", regex="TCK-[0-9]+"),)),
            ),
        ),
        limits=(
            Limit(
                policy="p",
                name="l",
                key="k",
                requests_per_minute=1,
                reroute_to=(RerouteBackend(provider="openai", model="m"),),
            ),
        ),
        guardrails=(Guardrail(name="g", url="https://guard.example.com/check"),),
    )
    return Snapshot(
        providers=providers,
        routes=(Route(name="r", model="m", rules=(rule,)),),
        policy=policy,
        limit_store=LimitStore(url=Secret("redis://redis:6379")),
    )


def written_in_full(value: Any) -> Any:
    """Every field written, defaults included, credentials revealed: the wire as a controller wrote it
    before defaults were left out, and what a sidecar holds once it filled in the defaults, whichever
    schema decoded it (so two decoders' results compare field by field)."""
    if isinstance(value, msgspec.Struct):
        return {f.encode_name: written_in_full(getattr(value, f.name)) for f in msgspec.structs.fields(value)}
    if isinstance(value, tuple | list):
        return [written_in_full(v) for v in value]
    if isinstance(value, dict):
        return {k: written_in_full(v) for k, v in value.items()}
    if isinstance(value, Secret):
        return value.get_secret_value()
    return value


def struct_names(value: Any) -> set[str]:
    """The names of the struct types a snapshot holds, anywhere in it."""
    if isinstance(value, msgspec.Struct):
        found = {type(value).__name__}
        for f in msgspec.structs.fields(value):
            found |= struct_names(getattr(value, f.name))
        return found
    if isinstance(value, tuple | list):
        return set().union(*(struct_names(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(struct_names(v) for v in value.values())) if value else set()
    return set()
