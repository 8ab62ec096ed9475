"""The snapshot as a whole, its wire form and content version, and the stream protocol's names."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from pydantic import Field, SecretStr, model_validator

from proxy.snapshot.base import _Frozen
from proxy.snapshot.policies import Policy
from proxy.snapshot.providers import Provider
from proxy.snapshot.routes import Route


class LimitStore(_Frozen):
    """Where the limit counters live when every sidecar shares them (Redis); the controller sends it
    with the snapshot, so one Secret in the controller's namespace reaches every pod."""

    # redis://, rediss://, unix://, or redis+sentinel://host:26379[,host:26379]/service[/db]; may carry a password.
    url: SecretStr
    cluster: bool = False  # speak Redis Cluster to the URL's node
    timeout_seconds: Annotated[float, Field(gt=0, le=5)] = 0.1
    key_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "modelway"


class Snapshot(_Frozen):
    """Everything one sidecar needs. `version` is a content hash (see `content_version`)."""

    version: str = ""
    providers: tuple[Provider, ...] = ()
    routes: tuple[Route, ...] = ()
    policy: Policy = Policy()
    # None: the sidecar's own `--limits-redis-url`, else counters in the sidecar's memory.
    limit_store: LimitStore | None = None

    @model_validator(mode="after")
    def _references(self) -> Snapshot:
        providers = {p.name for p in self.providers}
        if len(providers) != len(self.providers):
            raise ValueError("provider names must be unique")
        models = [r.model for r in self.routes]
        if len(models) != len(set(models)):
            dupes = sorted({m for m in models if models.count(m) > 1})
            raise ValueError(f"more than one route serves model(s) {dupes}")
        for route in self.routes:
            for rule in route.rules:
                for backend in (*rule.backends, *rule.fallbacks):
                    if backend.provider not in providers:
                        raise ValueError(
                            f"route {route.name!r} rule {rule.name!r}: unknown provider "
                            f"{backend.provider!r} (known: {sorted(providers)})"
                        )
        return self

    def masked(self) -> dict[str, Any]:
        """The snapshot as JSON-ready data with every credential replaced by a marker."""
        data = self.model_dump(mode="json", by_alias=True)
        for provider in data["providers"]:
            if provider.get("apiKey") is not None:
                provider["apiKey"] = "<redacted>"
            keys: dict[str, Any] = (provider.get("bedrock") or {}).get("credentials") or {}
            for field, value in keys.items():
                if value is not None:
                    keys[field] = "<redacted>"
            entra: dict[str, Any] = provider.get("entra") or {}
            if entra.get("clientSecret") is not None:
                entra["clientSecret"] = "<redacted>"
            vertex: dict[str, Any] = provider.get("vertex") or {}
            if vertex.get("serviceAccountKey") is not None:
                vertex["serviceAccountKey"] = "<redacted>"
        if data.get("limitStore") is not None:
            data["limitStore"]["url"] = "<redacted>"
        return data


def to_wire(snapshot: Snapshot, *, exclude_version: bool = False) -> dict[str, Any]:
    """The snapshot as JSON-ready data WITH credentials: for the controller stream and the
    sidecar's saved copy only, never for logs or dumps (use `masked`)."""
    data = snapshot.model_dump(mode="json", by_alias=True, exclude={"version"} if exclude_version else None)
    for provider, original in zip(data["providers"], snapshot.providers, strict=True):
        if original.api_key is not None:
            provider["apiKey"] = original.api_key.get_secret_value()
        keys = original.bedrock.credentials if original.bedrock is not None else None
        if keys is not None:
            provider["bedrock"]["credentials"] = {
                "accessKeyId": keys.access_key_id.get_secret_value(),
                "secretAccessKey": keys.secret_access_key.get_secret_value(),
                "sessionToken": keys.session_token.get_secret_value() if keys.session_token is not None else None,
            }
        if original.entra is not None and original.entra.client_secret is not None:
            provider["entra"]["clientSecret"] = original.entra.client_secret.get_secret_value()
        if original.vertex is not None and original.vertex.service_account_key is not None:
            provider["vertex"]["serviceAccountKey"] = original.vertex.service_account_key.get_secret_value()
    if snapshot.limit_store is not None:
        data["limitStore"]["url"] = snapshot.limit_store.url.get_secret_value()
    return data


def content_version(snapshot: Snapshot) -> str:
    """A stable hash of the snapshot's content (credentials included, so rotation is a change)."""
    blob = json.dumps(to_wire(snapshot, exclude_version=True), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def parse_snapshot(data: dict[str, Any]) -> Snapshot:
    """Validate raw data into a Snapshot, filling in the content version when absent."""
    snapshot = Snapshot.model_validate(data)
    if not snapshot.version:
        snapshot = snapshot.model_copy(update={"version": content_version(snapshot)})
    return snapshot


# --- the controller <-> sidecar stream (a WebSocket; JSON text messages) ------------------
#
# sidecar -> controller, first:  {"type": "hello", "version": "<what it runs, or ''>"}
# controller -> sidecar:         {"type": "snapshot", "version": v, "snapshot": to_wire(...)}
# sidecar -> controller:         {"type": "ack", "version": v}
#                                {"type": "nack", "version": v, "error": "<why; no secrets>"}
#                                {"type": "counts", "sidecar": "<its id>", "started": <unix s>,
#                                 "experiments": {"<experiment name>": {"<arm>": ArmStats.to_dict()}}}
# A counts message carries the sidecar's running totals since it started (never deltas), so the
# controller keeps the latest per (sidecar, started) and a resend or a reconnect counts nothing twice.
# Bounded: at most COUNTS_MAX_EXPERIMENTS experiments of at most 16 arms, in a message of at most
# COUNTS_MAX_BYTES; every few seconds while something was counted.
# The sidecar authenticates with `Authorization: Bearer <projected ServiceAccount token>`
# (audience `modelway`); it only ever receives what its workload may see.

STREAM_PATH = "/v1/stream"
COUNTS_MAX_EXPERIMENTS = 256
COUNTS_MAX_BYTES = 256 * 1024
TOKEN_AUDIENCE = "modelway"
