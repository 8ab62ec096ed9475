"""The controller's flags for the injection webhook and its certificates, and starting them.

Kept apart from `controller/__main__.py` so that file only gains a few
lines. Kubernetes mode only (`--source kube`); `--source files` serves no
webhook and keeps its plain `--tls-cert/--tls-key`.

Certificates, in order of precedence:
- `--tls-cert/--tls-key` (+ `--ca-file`): files kept by someone else
  (cert-manager), re-read when they change;
- `--cert-secret-name`: the controller's own CA and certificate, in that
  Secret of its namespace, for the names of `--service-name`;
- neither: no TLS (the sidecar stream is plain ws; no webhook can be served).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from aiohttp import web

from controller.kube.client import KubeClient
from controller.webhook.certs import service_hosts
from controller.webhook.certstore import CertSource, FileCerts, SelfManagedCerts
from controller.webhook.inject import SidecarSettings
from controller.webhook.server import build_webhook_app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    group = parser.add_argument_group("sidecar injection and certificates (--source kube)")
    group.add_argument(
        "--inject-config",
        type=Path,
        default=Path(p) if (p := env("MODELWAY_INJECT_CONFIG")) else None,
        metavar="FILE",
        help="the injected sidecar's settings (YAML: image, controllerURL, ports, "
        "resources...); serving the injection webhook needs it",
    )
    group.add_argument(
        "--webhook-listen",
        default=env("MODELWAY_WEBHOOK_LISTEN", "0.0.0.0:9443"),
        metavar="HOST:PORT",
        help="where the API server calls the injection webhook, over TLS (default: %(default)s)",
    )
    group.add_argument(
        "--webhook-config-name",
        default=env("MODELWAY_WEBHOOK_CONFIG") or None,
        metavar="NAME",
        help="with --cert-secret-name: the MutatingWebhookConfiguration whose caBundle we keep",
    )
    group.add_argument(
        "--cert-secret-name",
        default=env("MODELWAY_CERT_SECRET") or None,
        metavar="NAME",
        help="make our own CA and serving certificate and keep them in this Secret of our namespace "
        "(--lease-namespace), unless --tls-cert is given",
    )
    group.add_argument(
        "--service-name",
        default=env("MODELWAY_SERVICE_NAME", "modelway-controller"),
        help="the Service sidecars and the API server reach us by: the certificate's names (default: %(default)s)",
    )
    group.add_argument(
        "--cert-extra-host",
        action="append",
        default=[],
        metavar="HOST",
        help="another name or IP for the serving certificate (repeatable)",
    )
    group.add_argument(
        "--ca-file", type=Path, default=None, help="with --tls-cert: the CA bundle injected sidecars use to verify us"
    )


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.source != "kube":
        return
    if args.inject_config is not None and args.tls_cert is None and args.cert_secret_name is None:
        parser.error("--inject-config needs TLS for the webhook: --cert-secret-name NAME, or --tls-cert/--tls-key")


@dataclass(kw_only=True)
class WebhookParts:
    certs: CertSource | None
    runner: web.AppRunner | None
    where: str


async def start(args: argparse.Namespace, *, client: KubeClient) -> WebhookParts:
    """Certificates ready and (with --inject-config) the webhook serving, before we announce ourselves."""
    namespace = args.lease_namespace
    certs: CertSource | None = None
    if args.tls_cert is not None:
        certs = FileCerts(cert_file=args.tls_cert, key_file=args.tls_key, ca_file=args.ca_file)
    elif args.cert_secret_name:
        hosts = service_hosts(service=args.service_name, namespace=namespace, extra=args.cert_extra_host)
        certs = SelfManagedCerts(
            client=client,
            namespace=namespace,
            secret_name=args.cert_secret_name,
            hosts=hosts,
            webhook_config_name=args.webhook_config_name,
        )
    if certs is not None:
        await certs.start()
    if args.inject_config is None or certs is None:
        return WebhookParts(certs=certs, runner=None, where="")
    settings = SidecarSettings.from_mapping(yaml.safe_load(args.inject_config.read_text()) or {})
    app = build_webhook_app(settings=settings, ca_pem=lambda: certs.ca_pem, own_namespace=namespace)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = args.webhook_listen.rpartition(":")
    await web.TCPSite(runner, host or "0.0.0.0", int(port), ssl_context=certs.ssl_context).start()
    return WebhookParts(certs=certs, runner=runner, where=f"https://{host}:{port}")
