"""A snapshot compiled for serving: routing table, one translator per provider, the policy's classifier,
the counters its limits bind (`proxy.limits.binding`), the redaction rules of the backends reached only
masked, the guardrails of each route, and the scrubber of the snapshot's own secrets.

Built once per snapshot, off the request path; requests read `holder.current`
once and keep that object, so a swap never disturbs a request in flight.
"""

from __future__ import annotations

import logging
import ssl
import time
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import msgspec

from proxy.auth.token_sources import TokenSources
from proxy.guardrails.table import GuardrailTable
from proxy.limits.binding import LimitTable
from proxy.policy.classify import Classifier
from proxy.providers.base import Translator
from proxy.providers.registry import build_translator
from proxy.redaction.table import RedactionTable
from proxy.routing.table import RoutingTable
from proxy.snapshot import LimitStore, Provider, Snapshot
from shared.scrub import Scrubber

if TYPE_CHECKING:  # the AWS signing code is loaded only for providers that sign
    from proxy.auth.aws_credentials import AwsCredentialSource

log = logging.getLogger(__name__)


class Runtime(msgspec.Struct, frozen=True):
    snapshot: Snapshot
    table: RoutingTable
    translators: dict[str, Translator]
    providers: dict[str, Provider]
    classifier: Classifier
    # When this configuration was received (from the controller, or read from a file);
    # a snapshot restored from the saved copy keeps its original time, so its age is honest.
    received_at: float = msgspec.field(default_factory=time.time)
    # Redacts this snapshot's keys from provider text (error answers echo them) before it
    # reaches a log, a span or the app.
    scrubber: Scrubber = msgspec.field(default_factory=Scrubber)
    # Which counters bind each (route, provider, model); empty without limits and capacity.
    limits: LimitTable = msgspec.field(default_factory=lambda: LimitTable({}, {}))
    # The backends some data classes reach only masked, each with its rule (built here, never per request).
    redactions: RedactionTable = msgspec.field(default_factory=lambda: RedactionTable({}))
    # The guardrails each (route, data class, phase) asks, picked here, never per request.
    guardrails: GuardrailTable = msgspec.field(default_factory=lambda: GuardrailTable({}))
    # The TLS context of each https provider (host, port) with its own CA bundle, built here, never per call.
    tls_contexts: dict[tuple[str, int], ssl.SSLContext] = msgspec.field(default_factory=dict)

    @classmethod
    def build(
        cls,
        snapshot: Snapshot,
        *,
        received_at: float | None = None,
        aws_identity: AwsCredentialSource | None = None,
        tokens: TokenSources | None = None,
    ) -> Runtime:
        """`aws_identity`: the pod's own AWS credentials; `tokens`: the OAuth token sources (both kept
        across snapshots, refreshed by their own tasks)."""
        translators = {
            p.name: build_translator(p, aws_identity=aws_identity, tokens=tokens) for p in snapshot.providers
        }
        if tokens is not None:
            tokens.retain(snapshot.providers)
        limits = LimitTable.build(snapshot)
        if not limits.empty:  # the admit stage's gate and the limits code it runs: loaded now, not by a request
            import proxy.request.gate
        guardrails = GuardrailTable.build(snapshot)
        if guardrails:  # the guardrail checks, client, texts and window: loaded now, not by a request
            import proxy.request.guarded  # noqa: F401
        return cls(
            snapshot=snapshot,
            table=RoutingTable.build(snapshot),
            translators=translators,
            providers={p.name: p for p in snapshot.providers},
            classifier=Classifier(policy=snapshot.policy),
            received_at=time.time() if received_at is None else received_at,
            scrubber=Scrubber(_secrets(snapshot)),
            limits=limits,
            redactions=RedactionTable.build(snapshot.policy),
            guardrails=guardrails,
            tls_contexts=_tls_contexts(snapshot),
        )


def _tls_contexts(snapshot: Snapshot) -> dict[tuple[str, int], ssl.SSLContext]:
    """One client context per https host:port that providers give a caBundle for, trusting those CAs
    only (a few certificates: well under a millisecond, once per snapshot). Pooled connections are
    per host:port, so providers that name the same one with different bundles share one context that
    trusts every bundle they name, rather than the last one's."""
    contexts: dict[tuple[str, int], ssl.SSLContext] = {}
    for provider in snapshot.providers:
        parts = urlsplit(provider.base_url)
        if provider.ca_bundle is None or parts.scheme != "https" or not parts.hostname:
            continue
        endpoint = (parts.hostname, parts.port or 443)
        if endpoint not in contexts:  # verification and hostname checks on; the system's CAs not loaded
            contexts[endpoint] = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            # read on its own first: a bundle that fails halfway adds none of its certificates
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=provider.ca_bundle)
        except (ssl.SSLError, ValueError) as exc:
            # Shaped like certificates (the controller checked) yet unreadable: it adds no CA (and never
            # the system's), so the provider's calls fail unless another bundle for the host trusts it.
            log.warning("provider %s: its caBundle cannot be read (%s); none of it is trusted", provider.name, exc)
            continue
        contexts[endpoint].load_verify_locations(cadata=provider.ca_bundle)
    return contexts


def _secrets(snapshot: Snapshot) -> list[str]:
    secrets = [secret for p in snapshot.providers for secret in p.secrets()]
    if snapshot.limit_store is not None:
        secrets.extend(store_secrets(snapshot.limit_store))
    return secrets


def store_secrets(store: LimitStore) -> list[str]:
    """The limit store URL's password, as written and decoded (a Redis error can quote its URL). Not the
    whole URL: the scrubber redacts any 8 characters of a secret, and "redis://" or a host's address
    are not secret."""
    try:
        password = urlsplit(store.url.get_secret_value()).password
    except ValueError:  # a malformed URL: no client is made from it (proxy.limits.slot)
        return []
    return [password, unquote(password)] if password else []


class RuntimeHolder:
    """The sidecar's current runtime; `swap` is a single reference assignment."""

    def __init__(self) -> None:
        self.current: Runtime | None = None

    def swap(self, runtime: Runtime) -> None:
        self.current = runtime
