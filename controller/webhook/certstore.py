"""Where the controller's serving certificate comes from, kept fresh while it runs.

Two kinds, one interface (`ca_pem`, `ssl_context`, `start()`, `run()`):

- `SelfManagedCerts`: the controller makes its CA and serving certificate
  (`certs.py`) and keeps them in a Secret in its namespace, so every replica
  serves the same certificate and a restart keeps it. Replicas race safely:
  create-or-read, and on a write conflict re-read and take the winner's. It
  also keeps the MutatingWebhookConfiguration's caBundle equal to the CA.
- `FileCerts`: files someone else keeps (cert-manager's Secret mounted in the
  pod, or `--tls-cert/--tls-key`), re-read when they change.

The SSLContext object is made once and reloaded in place, so the webhook and
sidecar-stream servers built on it pick up a renewed certificate for new
connections without a restart.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import ssl
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from controller.kube.client import KubeClient
from controller.kube.errors import KubeApiError, KubeError
from controller.kube.resources import MUTATING_WEBHOOK_CONFIGURATIONS, SECRETS
from controller.webhook.certs import CertBundle, new_bundle, renewal_reason

log = logging.getLogger("modelway.certs")

MAX_RACE_ROUNDS = 5


class CertSource(Protocol):
    @property
    def ca_pem(self) -> str: ...  # what sidecars are given to verify the controller ("" = system trust)

    @property
    def ssl_context(self) -> ssl.SSLContext: ...

    async def start(self) -> None: ...  # serving material ready when this returns

    async def run(self) -> None: ...  # forever: renew / reload


def _server_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class SelfManagedCerts:
    def __init__(
        self,
        *,
        client: KubeClient,
        namespace: str,
        secret_name: str,
        hosts: tuple[str, ...],
        webhook_config_name: str | None,
        check_seconds: float = 60.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._namespace = namespace
        self._secret_name = secret_name
        self._hosts = hosts
        self._webhook_config_name = webhook_config_name
        self._check_seconds = check_seconds
        self._now = now
        self._context = _server_context()
        self._bundle: CertBundle | None = None

    @property
    def ca_pem(self) -> str:
        return self._bundle.ca_pem if self._bundle else ""

    @property
    def ssl_context(self) -> ssl.SSLContext:
        return self._context

    @property
    def bundle(self) -> CertBundle | None:
        return self._bundle

    async def start(self) -> None:
        await self.sync()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._check_seconds)
            try:
                await self.sync()
            except KubeError as exc:  # keep serving the certificate we have; try again next round
                log.warning("certificate check failed (retrying in %.0fs): %s", self._check_seconds, exc)

    async def sync(self) -> None:
        """Secret -> (renew if due) -> this process's SSLContext -> the webhook's caBundle."""
        bundle = await self._settle_secret()
        if self._bundle is None or bundle.cert_pem != self._bundle.cert_pem:
            _load_chain(self._context, cert_pem=bundle.cert_pem, key_pem=bundle.key_pem)
            log.info(
                "serving certificate loaded from Secret %s/%s (names %s)",
                self._namespace,
                self._secret_name,
                ", ".join(self._hosts),
            )
        self._bundle = bundle
        if self._webhook_config_name:
            await self._sync_ca_bundle(bundle.ca_pem)

    async def _settle_secret(self) -> CertBundle:
        for _ in range(MAX_RACE_ROUNDS):
            secret = await self._client.get_secret(self._secret_name, namespace=self._namespace)
            current = _bundle_of(secret)
            now = self._now()
            if current is not None and renewal_reason(current, hosts=self._hosts, now=now) is None:
                return current
            if current is not None:
                log.info(
                    "renewing certificates in Secret %s/%s: %s",
                    self._namespace,
                    self._secret_name,
                    renewal_reason(current, hosts=self._hosts, now=now),
                )
            wanted = new_bundle(hosts=self._hosts, now=now, previous=current)
            data = {k: base64.b64encode(v.encode()).decode() for k, v in wanted.as_secret_data().items()}
            try:
                if secret is None:
                    await self._client.create(
                        SECRETS,
                        {
                            "apiVersion": "v1",
                            "kind": "Secret",
                            "type": "Opaque",
                            "metadata": {
                                "name": self._secret_name,
                                "namespace": self._namespace,
                                "labels": {"app.kubernetes.io/managed-by": "modelway-controller"},
                            },
                            "data": data,
                        },
                        namespace=self._namespace,
                    )
                else:  # optimistic: carries the resourceVersion we read
                    await self._client.replace(SECRETS, {**secret, "data": data})
                return wanted
            except KubeApiError as exc:
                if exc.status != 409:
                    raise
                log.info("another replica wrote Secret %s/%s first; using theirs", self._namespace, self._secret_name)
        raise KubeError(
            f"Secret {self._namespace}/{self._secret_name} kept changing under us "
            f"({MAX_RACE_ROUNDS} write conflicts in a row)"
        )

    async def _sync_ca_bundle(self, ca_pem: str) -> None:
        name = self._webhook_config_name
        assert name
        config = await self._client.get_mutating_webhook_configuration(name)
        if config is None:
            log.warning("MutatingWebhookConfiguration %s not found: pods cannot be injected until it exists", name)
            return
        wanted = base64.b64encode(ca_pem.encode()).decode()
        ops: list[dict[str, Any]] = []
        for index, hook in enumerate(config.get("webhooks") or ()):
            if (hook.get("clientConfig") or {}).get("caBundle") != wanted:
                # `test` first: if the list changed since we read it, the patch fails instead of hitting
                # the wrong webhook; the next round reads again.
                ops += [
                    {"op": "test", "path": f"/webhooks/{index}/name", "value": hook.get("name")},
                    {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": wanted},
                ]
        if ops:
            await self._client.patch(MUTATING_WEBHOOK_CONFIGURATIONS, name, ops, patch_type="json")
            log.info("caBundle of MutatingWebhookConfiguration %s brought up to date", name)


class FileCerts:
    """Certificate files kept by someone else (cert-manager, an operator): reloaded on change."""

    def __init__(self, *, cert_file: Path, key_file: Path, ca_file: Path | None, check_seconds: float = 60.0) -> None:
        self._cert_file, self._key_file, self._ca_file = cert_file, key_file, ca_file
        self._check_seconds = check_seconds
        self._context = _server_context()
        self._stamp: tuple[float, ...] = ()
        self._ca_pem = ""

    @property
    def ca_pem(self) -> str:
        return self._ca_pem

    @property
    def ssl_context(self) -> ssl.SSLContext:
        return self._context

    async def start(self) -> None:
        self.reload()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._check_seconds)
            try:
                self.reload()
            except (OSError, ssl.SSLError) as exc:  # mid-rotation: keep the loaded pair, read again later
                log.warning("certificate files not reloaded: %s", exc)

    def reload(self) -> None:
        files = [self._cert_file, self._key_file, *([self._ca_file] if self._ca_file else [])]
        stamp = tuple(f.stat().st_mtime for f in files)
        if stamp == self._stamp:
            return
        self._context.load_cert_chain(self._cert_file, self._key_file)
        self._ca_pem = self._ca_file.read_text() if self._ca_file else ""
        self._stamp = stamp
        log.info("serving certificate loaded from %s", self._cert_file)


def _bundle_of(secret: dict[str, Any] | None) -> CertBundle | None:
    if secret is None:
        return None
    try:
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    except (ValueError, UnicodeDecodeError):
        return None
    return CertBundle.from_secret_data(data)


def _load_chain(context: ssl.SSLContext, *, cert_pem: str, key_pem: str) -> None:
    # load_cert_chain reads only files: a private temp dir, gone once the context holds the key.
    # (In the pod /tmp is an emptyDir: the root filesystem is read-only.)
    with tempfile.TemporaryDirectory(prefix="modelway-tls-") as tmp:
        cert, key = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
        for path, text in ((cert, cert_pem), (key, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(text)
        context.load_cert_chain(cert, key)
