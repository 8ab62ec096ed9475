"""Connection settings for the API server: in-cluster (ServiceAccount) or a kubeconfig.

The TLS context is built once, here; the bearer token is looked up per request
because projected ServiceAccount tokens rotate (the kubelet rewrites the file,
client-go re-reads it every minute and so do we).
"""

from __future__ import annotations

import base64
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from controller.kube.errors import KubeError

log = logging.getLogger("modelway.kube")

IN_CLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REFRESH_SECONDS = 60.0


class ConfigError(KubeError):
    """No usable connection settings; the message says what is missing."""


class TokenSource(Protocol):
    def token(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class StaticToken:
    value: str = field(repr=False)

    def token(self) -> str | None:
        return self.value


class TokenFile:
    """A token file re-read every `refresh` seconds; a failed re-read keeps the last token."""

    def __init__(self, path: Path, *, refresh: float = TOKEN_REFRESH_SECONDS) -> None:
        self.path = path
        self._refresh = refresh
        self._value: str | None = None
        self._read_at = float("-inf")

    def token(self) -> str | None:
        now = time.monotonic()
        if now - self._read_at >= self._refresh:
            try:
                self._value = self.path.read_text().strip()
            except OSError as exc:
                if self._value is None:
                    raise ConfigError(f"cannot read the API token file {self.path}: {exc.strerror}") from None
                log.warning(
                    "cannot re-read the API token file %s (%s); keeping the previous token", self.path, exc.strerror
                )
            self._read_at = now
        return self._value

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r})"


@dataclass(frozen=True, slots=True)
class KubeConfig:
    server: str  # https://host:port, no trailing slash
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)  # None for plain http
    namespace: str = "default"  # this pod's (in-cluster) or the context's namespace
    auth: TokenSource | None = field(default=None, repr=False)


def load_config(
    kubeconfig: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] = os.environ
) -> KubeConfig:
    """--kubeconfig, else $KUBECONFIG, else in-cluster, else ~/.kube/config."""
    if kubeconfig:
        return from_kubeconfig([Path(kubeconfig)])
    if environ.get("KUBECONFIG"):
        return from_kubeconfig([Path(p) for p in environ["KUBECONFIG"].split(os.pathsep) if p])
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return in_cluster(environ=environ)
    default = Path.home() / ".kube" / "config"
    if default.exists():
        return from_kubeconfig([default])
    raise ConfigError(
        "no Kubernetes connection settings: not in a cluster (KUBERNETES_SERVICE_HOST unset), "
        "no --kubeconfig, no $KUBECONFIG and no ~/.kube/config"
    )


def in_cluster(
    *,
    environ: Mapping[str, str] = os.environ,
    directory: Path = IN_CLUSTER_DIR,
    token_refresh: float = TOKEN_REFRESH_SECONDS,
) -> KubeConfig:
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ConfigError("KUBERNETES_SERVICE_HOST is not set: not running in a Kubernetes pod")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    token, ca = directory / "token", directory / "ca.crt"
    for needed in (token, ca):
        if not needed.exists():
            raise ConfigError(f"{needed} is missing: is automountServiceAccountToken off for this pod?")
    namespace_file = directory / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.exists() else "default"
    auth = TokenFile(token, refresh=token_refresh)
    auth.token()  # fail now, not on the first request
    return KubeConfig(f"https://{host}:{port}", ssl.create_default_context(cafile=str(ca)), namespace, auth)


def from_kubeconfig(paths: Sequence[Path], *, context: str | None = None) -> KubeConfig:
    """Merges the files like kubectl (first definition of a name wins) and uses the current context."""
    merged: dict[str, Any] = {"clusters": {}, "users": {}, "contexts": {}, "current-context": ""}
    for path in paths:
        _merge(merged, path)
    name = context or merged["current-context"]
    if not name:
        raise ConfigError(f"kubeconfig {_names(paths)} sets no current-context")
    ctx = merged["contexts"].get(name)
    if ctx is None:
        raise ConfigError(f"kubeconfig {_names(paths)} has no context {name!r}")
    cluster = merged["clusters"].get(ctx.get("cluster"))
    if cluster is None or not cluster.get("server"):
        raise ConfigError(f"kubeconfig context {name!r} names cluster {ctx.get('cluster')!r}, which has no server")
    user = merged["users"].get(ctx.get("user"), {}) if ctx.get("user") else {}
    server = str(cluster["server"]).rstrip("/")
    ssl_context = (
        _ssl_context(cluster, user, what=f"kubeconfig context {name!r}") if server.startswith("https") else None
    )
    return KubeConfig(server, ssl_context, str(ctx.get("namespace") or "default"), _auth(user, ctx.get("user", "")))


def _names(paths: Sequence[Path]) -> str:
    return os.pathsep.join(str(p) for p in paths)


def _merge(merged: dict[str, Any], path: Path) -> None:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read kubeconfig {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"kubeconfig {path} is not valid YAML: {exc}") from None
    # Relative file references are relative to the kubeconfig that holds them.
    base = path.resolve().parent
    for section, inner, files in (
        ("clusters", "cluster", ("certificate-authority",)),
        ("users", "user", ("client-certificate", "client-key", "tokenFile")),
        ("contexts", "context", ()),
    ):
        for entry in doc.get(section) or []:
            body = dict(entry.get(inner) or {})
            for key in files:
                if body.get(key):
                    body[key] = str(base / os.path.expanduser(body[key]))
            merged[section].setdefault(entry.get("name"), body)
    merged["current-context"] = merged["current-context"] or doc.get("current-context") or ""


def _ssl_context(cluster: Mapping[str, Any], user: Mapping[str, Any], *, what: str) -> ssl.SSLContext:
    ca_file, ca_data = cluster.get("certificate-authority"), cluster.get("certificate-authority-data")
    ctx = ssl.create_default_context(
        cafile=ca_file or None, cadata=base64.b64decode(ca_data).decode() if ca_data else None
    )
    if cluster.get("insecure-skip-tls-verify"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    cert_file, key_file = user.get("client-certificate"), user.get("client-key")
    cert_data, key_data = user.get("client-certificate-data"), user.get("client-key-data")
    if (cert_file or cert_data) and (key_file or key_data):
        try:
            _load_cert_chain(ctx, cert_file, cert_data, key_file, key_data)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{what}: cannot load the client certificate/key: {exc}") from None
    elif cert_file or cert_data or key_file or key_data:
        raise ConfigError(f"{what}: a client certificate needs both the certificate and the key")
    return ctx


def _load_cert_chain(
    ctx: ssl.SSLContext, cert_file: str | None, cert_data: str | None, key_file: str | None, key_data: str | None
) -> None:
    # load_cert_chain only reads files: inline data goes through a private temp dir
    # that is gone as soon as the context holds the key.
    with tempfile.TemporaryDirectory(prefix="modelway-kube-") as tmp:
        if cert_data:
            cert_file = os.path.join(tmp, "client.crt")
            _write_private(cert_file, base64.b64decode(cert_data))
        if key_data:
            key_file = os.path.join(tmp, "client.key")
            _write_private(key_file, base64.b64decode(key_data))
        ctx.load_cert_chain(str(cert_file), str(key_file))


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _auth(user: Mapping[str, Any], name: str) -> TokenSource | None:
    for unsupported in ("exec", "auth-provider", "username"):
        if user.get(unsupported):
            raise ConfigError(
                f"kubeconfig user {name!r} uses {unsupported!r}, which modelway does not support; "
                "use a token, a tokenFile or a client certificate (or run in-cluster)"
            )
    if user.get("token"):
        return StaticToken(str(user["token"]))
    if user.get("tokenFile"):
        return TokenFile(Path(user["tokenFile"]))
    return None
