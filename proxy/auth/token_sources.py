"""The sidecar's OAuth token sources, kept across snapshots and refreshed by their own tasks.

Built once in `__main__`; each snapshot's translators ask it for their provider's source
(`for_provider`, at config time). Sources are keyed by what identifies the token (endpoint,
tenant, client, credential, scope), so a new snapshot with the same credentials keeps the token
in hand and its refresh task, and a changed secret starts a new source. `retain` stops the tasks
of sources no provider of the newest snapshot uses (a request still holding the old runtime keeps
reading the token it had until it expires).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import aiohttp

from proxy.snapshot import Provider

if TYPE_CHECKING:
    # Imported where a provider first needs them: a sidecar whose providers use no OAuth token
    # never holds the Entra ID and Google clients (memory every injected pod would pay).
    from proxy.auth.entra import AzureEnvironment
    from proxy.auth.google import GoogleEnvironment
    from proxy.auth.refreshed import RefreshedToken

log = logging.getLogger("modelway.auth")

SourceKey = tuple[str, ...]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class NoTokenSource:
    """A provider that needs an OAuth token but whose source cannot be set up: each request gets
    this reason as its error (no request goes without the token it needs)."""

    def __init__(self, reason: str) -> None:
        self._reason = reason

    def token(self) -> str | None:
        return None

    def missing(self) -> str:
        return self._reason


class TokenSources:
    def __init__(
        self,
        *,
        azure: AzureEnvironment | None = None,
        google: GoogleEnvironment | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        retry_seconds: tuple[float, float] = (1.0, 60.0),
    ) -> None:
        """`azure`, `google`: the pod's identities as given; otherwise read from `environ` (the process's
        environment in `__main__`) when a provider first needs them, or the defaults."""
        self._azure_given = azure
        self._google_given = google
        self._environ: Mapping[str, str] = {} if environ is None else environ
        self._clock = clock
        self._retry = retry_seconds
        self._sources: dict[SourceKey, RefreshedToken] = {}
        self._tasks: dict[SourceKey, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    @functools.cached_property
    def _azure(self) -> AzureEnvironment:
        from proxy.auth.entra import AzureEnvironment

        return self._azure_given or AzureEnvironment.from_environment(self._environ)

    @functools.cached_property
    def _google(self) -> GoogleEnvironment:
        from proxy.auth.google import GoogleEnvironment

        return self._google_given or GoogleEnvironment.from_environment(self._environ)

    def _entra(self, provider: Provider) -> tuple[SourceKey, Callable[[], RefreshedToken]] | str | None:
        entra = provider.entra
        if entra is None:
            return None
        from proxy.auth.entra import EntraToken

        authority = self._azure.authority_host
        if entra.client_secret is not None:
            assert entra.tenant_id is not None and entra.client_id is not None  # (the snapshot checks it)
            tenant, client, secret = entra.tenant_id, entra.client_id, entra.client_secret.get_secret_value()
            key = ("entra", authority, tenant, client, entra.scope, "secret", _digest(secret))
            return key, lambda: EntraToken(
                authority_host=authority, tenant_id=tenant, client_id=client, scope=entra.scope,
                client_secret=secret, clock=self._clock, retry_seconds=self._retry,
            )  # fmt: skip
        tenant_id, client_id = entra.tenant_id or self._azure.tenant_id, entra.client_id or self._azure.client_id
        token_file = self._azure.federated_token_file
        if tenant_id is None or client_id is None or token_file is None:
            reason = (
                "no Microsoft Entra ID token: workload identity needs AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID "
                "and AZURE_TENANT_ID in the sidecar's environment (or tenantId and clientId in spec.azure.entra)"
            )
            log.warning("provider %s: %s", provider.name, reason)
            return reason
        key = ("entra", authority, tenant_id, client_id, entra.scope, "federated", str(token_file))
        return key, lambda: EntraToken(
            authority_host=authority, tenant_id=tenant_id, client_id=client_id, scope=entra.scope,
            federated_token_file=token_file, clock=self._clock, retry_seconds=self._retry,
        )  # fmt: skip

    def _vertex(self, provider: Provider) -> tuple[SourceKey, Callable[[], RefreshedToken]] | str | None:
        vertex = provider.vertex
        if vertex is None or provider.api_key is not None:
            return None
        from proxy.auth.google import (
            MetadataServerToken,
            ServiceAccountKey,
            ServiceAccountKeyError,
            ServiceAccountToken,
        )

        if vertex.service_account_key is None:
            google = self._google
            return ("google", "metadata", google.token_url), lambda: MetadataServerToken(
                google, clock=self._clock, retry_seconds=self._retry
            )
        text = vertex.service_account_key.get_secret_value()
        try:
            key = ServiceAccountKey.from_json(text)  # (the controller checked it too)
        except ServiceAccountKeyError as exc:
            log.warning("provider %s: %s", provider.name, exc)
            return f"no Google service account token: {exc}"
        return ("google", "service-account", key.client_email, _digest(text)), lambda: ServiceAccountToken(
            key, clock=self._clock, retry_seconds=self._retry
        )

    def _key(self, provider: Provider) -> tuple[SourceKey, Callable[[], RefreshedToken]] | str | None:
        """The provider's source key and maker; a reason when it needs a token it cannot have; None
        when it uses no OAuth token."""
        return self._entra(provider) or self._vertex(provider)

    def for_provider(self, provider: Provider) -> RefreshedToken | NoTokenSource | None:
        """The provider's token source (started on first use), or None when it uses no OAuth token."""
        found = self._key(provider)
        if found is None or isinstance(found, str):
            return None if found is None else NoTokenSource(found)
        key, make = found
        source = self._sources.get(key)
        if source is None:
            try:
                source = self._sources[key] = make()
            except ValueError as exc:
                from proxy.auth.google import ServiceAccountKeyError

                if not isinstance(exc, ServiceAccountKeyError):  # (a PEM that does not load)
                    raise
                log.warning("provider %s: %s", provider.name, exc)
                return NoTokenSource(f"no Google service account token: {exc}")
        if key not in self._tasks:
            self._start(key, source)
        return source

    def _start(self, key: SourceKey, source: RefreshedToken) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # built outside the sidecar's loop (a config check): nothing to refresh
            return
        if self._session is None:
            # HTTPS_PROXY and friends honoured, as the provider client does (proxy.egress)
            self._session = aiohttp.ClientSession(trust_env=True)
        self._tasks[key] = loop.create_task(source.run(self._session), name=f"token source {source!r}")

    def retain(self, providers: Iterable[Provider]) -> None:
        """Stops the sources none of `providers` uses."""
        wanted = {found[0] for p in providers if isinstance(found := self._key(p), tuple)}
        for key in [k for k in self._sources if k not in wanted]:
            del self._sources[key]
            task = self._tasks.pop(key, None)
            if task is not None:
                task.cancel()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
