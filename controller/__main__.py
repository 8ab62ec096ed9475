"""`modelway-controller`: watch resources, compile snapshots, push them to sidecars.

Settings are read here once and passed down. Two sources share everything
else: the Kubernetes API (`--source kube`, the default in a cluster) and a
folder of the same YAML (`--source files`, what `modelway dev` runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import ssl
import sys
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from controller import limit_store as limit_store_flags
from controller.auth import Authenticator, Identity, StaticAuthenticator
from controller.core import Controller
from controller.push import build_push_app
from controller.sources.base import Source
from controller.store import Key, ResourceStore
from controller.webhook import wiring as webhook_wiring
from shared.scrub import normalize_otlp_header_variables, scrub_logs

if TYPE_CHECKING:  # imported where used: `--source files` never loads the Kubernetes client
    from controller.experiment_runner import ExperimentRunner
    from controller.kube.client import KubeClient
    from controller.replicas import ReplicaCounts
    from controller.spend_reader import SpendReader, UnsharedSpend
    from controller.status_writer import ConditionLogger, StatusWriter

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
    parser.add_argument(
        "--spend-read-interval",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="with a limit store: how often budget spend is read back into the policies' status (default: %(default)s)",
    )
    parser.add_argument(
        "--experiment-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how often experiments are decided and their status refreshed (default: %(default)s)",
    )
    limit_store_flags.add_arguments(parser)
    webhook_wiring.add_arguments(parser)
    args = parser.parse_args(argv)
    args.limit_store = limit_store_flags.settings_from(parser, args)  # the URL is a Secret from here on
    if not args.spend_read_interval > 0:
        parser.error("--spend-read-interval must be more than 0 seconds")
    if not args.experiment_interval > 0:
        parser.error("--experiment-interval must be more than 0 seconds")
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


@dataclass(frozen=True, kw_only=True)
class Mode:
    """What the two sources bring: where resources come from, who may connect, how status is reported."""

    source: Source
    authenticator: Authenticator
    status: StatusWriter | ConditionLogger
    loops: tuple[Callable[[], Coroutine[Any, Any, None]], ...] = ()  # run as tasks until shutdown
    client: KubeClient | None = None  # kube: also the certificates' client; closed at exit
    spend: SpendReader | UnsharedSpend | None = None  # a reader's Redis client is closed at exit
    experiments: ExperimentRunner | None = None  # takes the sidecars' counts from the stream


def _spend(
    args: argparse.Namespace, controller: Controller, *, active: Callable[[], bool]
) -> SpendReader | UnsharedSpend:
    """With a limit store, a reader of budget spend for status (while `active`); without, the status says
    that no shared spend exists."""
    from controller.spend_reader import SpendReader, UnsharedSpend

    store = args.limit_store
    if store is None:
        return UnsharedSpend(controller)
    from controller.limit_store import connect

    return SpendReader(
        connect(store, timeout=max(1.0, store.timeout_seconds)),
        controller,
        prefix=store.key_prefix,
        interval=args.spend_read_interval,
        active=active,
    )


def _spend_loops(spend: SpendReader | UnsharedSpend) -> tuple[Callable[[], Coroutine[Any, Any, None]], ...]:
    from controller.spend_reader import SpendReader

    return (spend.run,) if isinstance(spend, SpendReader) else ()


def _experiments(
    controller: Controller,
    *,
    interval: float,
    active: Callable[[], bool],
    previous: Callable[[Key], Mapping[str, Any] | None] | None = None,
    replicas: ReplicaCounts | None = None,
) -> ExperimentRunner:
    from controller.experiment_runner import ExperimentRunner

    runner = ExperimentRunner(
        routes=lambda: {key: verdict.served for key, verdict in controller.judgement.routes.items()},
        set_weights=controller.set_arm_weights,
        previous=previous,
        interval=interval,
        active=active,
        peers=replicas.experiment_counts if replicas is not None else None,
    )
    if replicas is not None:  # every replica publishes its sidecars' counts; the leader sums them all
        replicas.share_experiments(runner.ledger.published)
        runner.add_record_listener(replicas.notify)
    return runner


def _files_mode(args: argparse.Namespace, controller: Controller) -> Mode:
    """A folder of YAML, one dev sidecar with a token made for this run; conditions are logged."""
    from controller.sources.files import FileSource
    from controller.status_writer import ConditionLogger

    spend = _spend(args, controller, active=lambda: True)
    experiments = _experiments(controller, interval=args.experiment_interval, active=lambda: True)
    return Mode(
        source=FileSource(args.config_dir),
        authenticator=_dev_authenticator(args),
        # one replica: its own counts are all there is
        status=ConditionLogger(controller, spend=spend, experiments=experiments),
        loops=(*_spend_loops(spend), experiments.run),
        spend=spend,
        experiments=experiments,
    )


def _kube_mode(args: argparse.Namespace, controller: Controller) -> Mode:
    """The API server's watch; sidecars checked by TokenReview; the Lease holder writes status."""
    from controller.auth import TokenReviewAuthenticator
    from controller.kube.client import KubeClient
    from controller.kube.config import load_config
    from controller.leader import LeaseElector, default_identity
    from controller.replicas import ReplicaCounts
    from controller.sources.kube import KubeSource
    from controller.spend_reader import SpendReader
    from controller.status_writer import ObservedStatuses, StatusWriter

    client = KubeClient(load_config(kubeconfig=args.kubeconfig))
    statuses = ObservedStatuses()  # what the watch saw: a new leader's first pass needs no GET per object
    elector = LeaseElector(client, namespace=args.lease_namespace, identity=default_identity(args.pod_name))
    replicas = ReplicaCounts(
        client, controller, namespace=args.lease_namespace, identity=elector.identity, elector=elector
    )
    spend = _spend(args, controller, active=lambda: elector.is_leader)  # read by the replica that writes status
    if isinstance(spend, SpendReader):
        elector.add_listener(spend.on_leadership)
    # Decided by the replica that writes status, from the counts of the sidecars connected to every replica.
    experiments = _experiments(
        controller,
        interval=args.experiment_interval,
        active=lambda: elector.is_leader,
        previous=lambda key: seen.status if (seen := statuses.get(key)) is not None else None,
        replicas=replicas,
    )
    writer = StatusWriter(
        client, controller, elector=elector, counts=replicas, statuses=statuses, spend=spend, experiments=experiments
    )
    return Mode(
        source=KubeSource(client, statuses=statuses),
        authenticator=TokenReviewAuthenticator(review=client.review_token_status, get_pod=client.get_pod),
        status=writer,
        loops=(elector.run, writer.run, replicas.run, *_spend_loops(spend), experiments.run),
        client=client,
        spend=spend,
        experiments=experiments,
    )


def _tune_gc() -> None:
    """The cyclic collector, for a heap of long-lived objects that grows with routes and sidecars.

    What is loaded by now (every watched object, parsed, and its judgement) lives as long as the
    process: frozen, it is left out of every later pass. And young collections every 50,000
    allocations instead of 700: a push to thousands of sidecars allocates hundreds of thousands of
    short-lived objects, and at 700 enough of them outlive two young collections to trigger a full
    pass over every connection's objects after each change (a second of CPU and the loop stalled
    at 5,000 sidecars). Cyclic garbage waits a little longer; nothing else changes.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


TLS_READ_BUFFER = 16 * 1024  # bytes: a TLS record's payload at most, so one read still takes a whole record


def use_small_tls_read_buffers() -> None:
    """asyncio's TLS connections each keep a read buffer of 256 KiB, zero-filled at once (so all of it
    resident): with sidecars on wss, 5,000 streams held 1.4 GB for buffers that are never more than a
    record full. At 16 KiB a stream costs about 50 KB in all instead of 290. Only how much one read
    call takes changes (a big watch list is read in more, smaller reads); nothing on the wire does.
    The attribute is asyncio's own knob (uvloop has its own, and allocates lazily)."""
    import asyncio.sslproto

    if getattr(asyncio.sslproto.SSLProtocol, "max_size", 0) > TLS_READ_BUFFER:
        asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


async def run(args: argparse.Namespace) -> None:
    from controller.admin import RUNNER_OPTIONS, Readiness, build_admin_app
    from controller.telemetry import build_controller_telemetry

    telemetry = build_controller_telemetry()  # OTEL_* from the environment
    store = ResourceStore()
    controller = Controller(store=store, telemetry=telemetry, limit_store=args.limit_store)
    mode = _files_mode(args, controller) if args.source == "files" else _kube_mode(args, controller)
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
    host, _, port = args.listen.rpartition(":")
    ssl_context = None
    webhook = None
    if mode.client is not None:  # certificates (own CA, or files re-read on change) and the injection webhook
        webhook = await webhook_wiring.start(args, client=mode.client)
        ssl_context = webhook.certs.ssl_context if webhook.certs else None
    elif args.tls_cert is not None:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
    runner = web.AppRunner(
        build_push_app(controller=controller, authenticator=mode.authenticator, counts=mode.experiments),
        access_log=None,
        **RUNNER_OPTIONS,
    )
    await runner.setup()
    source = mode.source
    tasks = [asyncio.create_task(source.run(store), name="source"), *(asyncio.create_task(f()) for f in mode.loops)]
    if webhook is not None and webhook.certs is not None:
        tasks.append(asyncio.create_task(webhook.certs.run(), name="certs"))
    if webhook is not None and webhook.runner is not None:
        print(f"modelway-controller serving the injection webhook on {webhook.where}", flush=True)
    await source.wait_synced()
    await controller.recompute()
    _tune_gc()
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
        if mode.client is not None:
            await mode.client.close()
        if mode.spend is not None and hasattr(mode.spend, "close"):
            await mode.spend.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scrub_logs()  # defence in depth: no line goes out with something shaped like a key
    for problem in normalize_otlp_header_variables(os.environ):  # named, never shown
        log.warning("OTLP: %s", problem)
    use_small_tls_read_buffers()
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
