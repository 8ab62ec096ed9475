"""`modelway-controller`: watch resources, compile snapshots, push them to sidecars.

Settings are read here once and passed down. Two sources share everything
else: the Kubernetes API (`--source kube`, the default in a cluster) and a
folder of the same YAML (`--source files`, what `modelway dev` runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from controller.auth import Authenticator, Identity, StaticAuthenticator
from controller.core import Controller
from controller.push import build_push_app
from controller.store import ResourceStore
from controller.webhook import wiring as webhook_wiring
from shared.scrub import normalize_otlp_header_variables, scrub_logs

if TYPE_CHECKING:
    from controller.status_writer import ObservedStatuses

log = logging.getLogger("modelway.controller")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="modelway-controller",
        description="The Modelway controller: watches ModelProvider and ModelRoute resources, compiles "
        "one snapshot per workload and pushes it to the sidecars that connect.",
    )
    parser.add_argument(
        "--source",
        choices=["kube", "files"],
        default=env("MODELWAY_SOURCE", "kube"),
        help="where resources come from (default: %(default)s)",
    )
    parser.add_argument("--config-dir", type=Path, help="with --source files: the folder of YAML to watch")
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=Path(p) if (p := env("KUBECONFIG")) else None,
        help="with --source kube outside a cluster (default: in-cluster config)",
    )
    parser.add_argument(
        "--listen",
        default=env("MODELWAY_LISTEN", "0.0.0.0:15012"),
        metavar="HOST:PORT",
        help="where sidecars connect (default: %(default)s)",
    )
    parser.add_argument("--tls-cert", type=Path, help="serving certificate for the sidecar stream")
    parser.add_argument("--tls-key", type=Path, help="its private key")
    parser.add_argument(
        "--dev-token-file", type=Path, help="with --source files: the token sidecars must show (written if missing)"
    )
    parser.add_argument(
        "--dev-namespace",
        default="default",
        help="with --source files: the namespace the dev sidecar belongs to (default: %(default)s)",
    )
    parser.add_argument(
        "--lease-namespace",
        default=env("POD_NAMESPACE") or "default",
        help="with --source kube: namespace of the leader-election Lease (default: $POD_NAMESPACE, else default)",
    )
    parser.add_argument(
        "--pod-name",
        default=env("POD_NAME"),
        help="with --source kube: this replica's name in the Lease (default: $POD_NAME, else the host)",
    )
    parser.add_argument(
        "--log-level", default=env("MODELWAY_LOG_LEVEL", "info"), choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--admin-listen",
        default=env("MODELWAY_ADMIN_LISTEN", "0.0.0.0:15014"),
        metavar="HOST:PORT",
        help="admin port: /healthz, /readyz (source synced, first compile done), /metrics (default: %(default)s)",
    )
    webhook_wiring.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.source == "files" and args.config_dir is None:
        parser.error("--source files needs --config-dir DIR (a folder of ModelProvider/ModelRoute/Secret YAML)")
    if args.source == "files" and args.dev_token_file is None:
        parser.error("--source files needs --dev-token-file FILE (the token the dev sidecar presents)")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    webhook_wiring.check_arguments(parser, args)
    return args


def _dev_authenticator(args: argparse.Namespace) -> Authenticator:
    path: Path = args.dev_token_file
    if not path.exists():
        import secrets

        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
    identity = Identity(namespace=args.dev_namespace, service_account="default", pod_name="dev-sidecar")
    return StaticAuthenticator(token=path.read_text().strip(), identity=identity)


async def _sources(args: argparse.Namespace) -> tuple[Any, Authenticator, list[Any]]:
    """The resource source, the sidecar authenticator, and things to close at exit."""
    if args.source == "files":
        from controller.sources.files import FileSource

        return FileSource(args.config_dir), _dev_authenticator(args), []
    from controller.auth import TokenReviewAuthenticator
    from controller.kube.client import KubeClient
    from controller.kube.config import load_config
    from controller.sources.kube import KubeSource
    from controller.status_writer import ObservedStatuses

    client = KubeClient(load_config(kubeconfig=args.kubeconfig))
    authenticator = TokenReviewAuthenticator(review=client.review_token_status, get_pod=client.get_pod)
    return KubeSource(client, statuses=ObservedStatuses()), authenticator, [client]


def _status_reporting(
    args: argparse.Namespace, closables: list[Any], *, statuses: ObservedStatuses | None = None
) -> tuple[Any, list[Any], Any]:
    """kube: the Lease holder writes status; files: conditions are logged. Also what to run for it,
    and (kube only) the ReplicaCounts that sums every replica's sidecar counts for the writer."""
    from controller.status_writer import ConditionLogger, StatusWriter

    if args.source == "files":
        return ConditionLogger(), [], None  # one replica: its own counts are all there is
    from controller.kube.client import KubeClient
    from controller.leader import LeaseElector, default_identity
    from controller.replicas import ReplicaCounts

    client = next(c for c in closables if isinstance(c, KubeClient))
    elector = LeaseElector(client, namespace=args.lease_namespace, identity=default_identity(args.pod_name))
    replicas = ReplicaCounts(client, namespace=args.lease_namespace, identity=elector.identity, elector=elector)
    # statuses: what the watch saw, so a new leader's first pass needs no GET per object
    writer = StatusWriter(client, None, elector=elector, sync_counts=replicas.sync_counts, statuses=statuses)
    replicas.on_peers_change = writer.on_sync_change  # another replica's counts moved: write again
    return writer, [elector.run, writer.run, replicas.run], replicas


async def run(args: argparse.Namespace) -> None:
    source, authenticator, closables = await _sources(args)
    store = ResourceStore()
    status, status_loops, replicas = _status_reporting(args, closables, statuses=getattr(source, "statuses", None))

    def on_sync_change() -> None:
        status.on_sync_change()
        if replicas is not None:
            replicas.notify()  # publish our counts for the leader

    from controller.admin import RUNNER_OPTIONS, Readiness, build_admin_app
    from controller.telemetry import build_controller_telemetry

    telemetry = build_controller_telemetry()  # OTEL_* from the environment
    controller = Controller(
        store=store, on_recompute=status.on_recompute, on_sync_change=on_sync_change, telemetry=telemetry
    )
    readiness = Readiness()
    admin = web.AppRunner(
        build_admin_app(readiness=readiness, telemetry=telemetry, connected=lambda: tuple(controller.sidecars)),
        access_log=None,
        **RUNNER_OPTIONS,
    )
    await admin.setup()
    admin_host, _, admin_port = args.admin_listen.rpartition(":")
    try:
        await web.TCPSite(admin, admin_host or "0.0.0.0", int(admin_port)).start()  # probes answer while syncing
    except OSError as exc:
        raise SystemExit(
            f"modelway-controller: cannot serve /healthz, /readyz and /metrics on {args.admin_listen}: "
            f"{exc.strerror or exc}; pick another with --admin-listen HOST:PORT"
        ) from None
    status.controller = controller  # the reporter reads the controller; the controller calls the reporter
    if replicas is not None:
        replicas.controller = controller
    store.on_change = controller.notify
    host, _, port = args.listen.rpartition(":")
    ssl_context = None
    webhook = None
    if args.source == "kube":  # certificates (own CA, or files re-read on change) and the injection webhook
        from controller.kube.client import KubeClient

        webhook = await webhook_wiring.start(args, client=next(c for c in closables if isinstance(c, KubeClient)))
        ssl_context = webhook.certs.ssl_context if webhook.certs else None
    elif args.tls_cert is not None:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
    runner = web.AppRunner(
        build_push_app(controller=controller, authenticator=authenticator), access_log=None, **RUNNER_OPTIONS
    )
    await runner.setup()
    tasks = [asyncio.create_task(source.run(store), name="source"), *(asyncio.create_task(f()) for f in status_loops)]
    if webhook is not None and webhook.certs is not None:
        tasks.append(asyncio.create_task(webhook.certs.run(), name="certs"))
    if webhook is not None and webhook.runner is not None:
        print(f"modelway-controller serving the injection webhook on {webhook.where}", flush=True)
    await source.wait_synced()
    await controller.recompute()
    readiness.ready, readiness.reason = True, ""
    tasks.append(asyncio.create_task(controller.run(), name="controller"))
    await web.TCPSite(runner, host or "0.0.0.0", int(port), ssl_context=ssl_context).start()
    scheme = "wss" if ssl_context else "ws"
    print(
        f"modelway-controller serving sidecar streams on {scheme}://{host}:{port} "
        f"({len(store.view().routes)} routes, {len(store.view().providers)} providers)",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await runner.cleanup()
        await admin.cleanup()
        telemetry.shutdown()  # flushes the last spans and metrics
        if webhook is not None and webhook.runner is not None:
            await webhook.runner.cleanup()
        for closable in closables:
            await closable.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scrub_logs()  # defence in depth: no line goes out with something shaped like a key
    for problem in normalize_otlp_header_variables(os.environ):  # named, never shown
        log.warning("OTLP: %s", problem)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
