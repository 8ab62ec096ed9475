"""`modelway-proxy`: the sidecar. Settings are read here, once, and passed down."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from proxy.admin import build_admin_app
from proxy.auth.pod_identity import keep_refreshed, pod_identity
from proxy.auth.token_sources import TokenSources
from proxy.egress import EgressSettings
from proxy.experiments import ExperimentCounts
from proxy.listener import GuardedSite, install_fd_exhaustion_logging, raise_fd_limit
from proxy.options import (
    access_log_settings,
    answer_limits,
    backpressure_settings,
    limit_settings,
    listener_settings,
    parse_args,
)
from proxy.policy.audit import AuditLog
from proxy.request.access_log import AccessLog, configure_access_logger
from proxy.request.admit import Admission
from proxy.runtime import Runtime, RuntimeHolder
from proxy.server import ServerSettings, SidecarRunner, build_app
from proxy.snapshot import Snapshot
from proxy.sync import ControllerSync, SyncSettings, load_saved
from proxy.telemetry import Telemetry, build_telemetry
from shared.scrub import normalize_otlp_header_variables, scrub_logs

log = logging.getLogger("modelway.proxy")
BuildRuntime = Callable[..., Runtime]  # Runtime.build with the sidecar's own settings bound


def _file_source(
    args: argparse.Namespace, holder: RuntimeHolder, initial: Snapshot, build: BuildRuntime
) -> Coroutine[Any, Any, None]:
    from proxy.snapshot_file import watch_snapshot_file  # --snapshot only: the YAML loader stays out of pods

    holder.swap(build(initial))

    def on_change(new: Snapshot) -> bool:
        try:
            runtime = build(new)
        except Exception:  # validates but cannot be compiled: keep serving the last good one
            log.exception("snapshot %s could not be compiled; keeping the last good snapshot", new.version)
            return False
        holder.swap(runtime)
        log.info("snapshot %s is live (%d routes)", new.version, len(new.routes))
        return True

    return watch_snapshot_file(
        args.snapshot,
        initial=initial,
        on_change=on_change,
        interval=args.reload_interval,
        stable_seconds=args.reload_stable_seconds,
    )


def _controller_source(
    args: argparse.Namespace, holder: RuntimeHolder, build: BuildRuntime, experiments: ExperimentCounts
) -> tuple[Coroutine[Any, Any, None], Callable[[], dict[str, Any]]]:
    if args.state_file is not None:
        saved = load_saved(args.state_file)
        if saved is not None:
            snapshot, received_at = saved
            holder.swap(build(snapshot, received_at=received_at))
            log.info(
                "serving saved snapshot %s from %s until the controller answers", snapshot.version, args.state_file
            )
    sync = ControllerSync(
        settings=SyncSettings(
            controller_url=args.controller,
            token_file=args.token_file,
            ca_file=args.ca_file,
            ca_pem=args.ca_pem,  # MODELWAY_CA_PEM, set by the injection webhook
            state_file=args.state_file,
            backoff_max_seconds=args.reconnect_max_seconds,
            counts_seconds=args.experiment_report_seconds,
        ),
        holder=holder,
        build_runtime=lambda snapshot, received_at: build(snapshot, received_at=received_at),
        counts=experiments,
    )
    return sync.run(), lambda: {"source": "controller", "controllerConnected": sync.connected}


async def serve(
    args: argparse.Namespace,
    telemetry: Telemetry,
    initial: Snapshot | None,
    holder: RuntimeHolder | None = None,
    egress: EgressSettings | None = None,
) -> None:
    holder = holder or RuntimeHolder()
    # The pod's own AWS identity (IRSA), for Bedrock providers configured without keys: one holder
    # for every snapshot, refreshed by its own task.
    aws_identity = pod_identity(os.environ)
    # OAuth access tokens (Entra ID, Google), one source per identity, kept across snapshots, refreshed
    # by their own tasks; their clients are imported only when a provider needs one.
    tokens = TokenSources(environ=os.environ)
    build = functools.partial(Runtime.build, aws_identity=aws_identity, tokens=tokens)
    identity_task = asyncio.create_task(keep_refreshed(aws_identity)) if aws_identity is not None else None
    if initial is not None:
        source = _file_source(args, holder, initial, build)

        def source_status() -> dict[str, Any]:
            return {"source": "file"}

    experiments = ExperimentCounts(sidecar=os.environ.get("POD_NAME") or None)
    if initial is None:
        source, source_status = _controller_source(args, holder, build, experiments)
    audit = AuditLog(pod=os.environ.get("POD_NAME", ""))
    admission = Admission(limits=limit_settings(args), telemetry=telemetry, audit=audit)
    app = build_app(
        holder=holder,
        telemetry=telemetry,
        settings=ServerSettings(
            max_body_bytes=args.max_body_bytes,
            answer_limits=answer_limits(args),
            backpressure=backpressure_settings(args),
            egress=egress or EgressSettings(),
        ),
        audit=audit,
        access_log=AccessLog(access_log_settings(args)),
        admission=admission,
        experiments=experiments,
    )
    runner = SidecarRunner(app, access_log=None, handler_cancellation=True)
    admin = web.AppRunner(
        build_admin_app(
            holder=holder,
            source_status=source_status,
            metrics_registry=telemetry.metrics.registry,
            limits_status=admission.status,
        ),
        access_log=None,
    )
    await runner.setup()
    await admin.setup()
    install_fd_exhaustion_logging(asyncio.get_running_loop())
    app_ports, admin_ports = listener_settings(args)
    ports: list[Any] = []  # one process, one fd budget: either port may shed the other's idle connections
    await GuardedSite(runner, args.host, args.port, settings=app_ports, name="app", group=ports).start()
    await GuardedSite(admin, args.admin_host, args.admin_port, settings=admin_ports, name="admin", group=ports).start()
    # Tests and `modelway dev` wait for this line.
    print(
        f"modelway-proxy listening on http://{args.host}:{args.port} admin http://{args.admin_host}:{args.admin_port}",
        flush=True,
    )
    source_task = asyncio.create_task(source)
    export = telemetry.metric_export  # OTLP metrics: collected on the loop, posted by a thread
    export_task = asyncio.create_task(export.run()) if export is not None else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        source_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await source_task
        if identity_task is not None:
            identity_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await identity_task
        await tokens.close()
        await runner.cleanup()
        await admin.cleanup()
        if export_task is not None:
            export_task.cancel()
            export.collect_now()  # the last totals, posted by telemetry.shutdown()


def _tune_gc() -> None:
    """Keeps the cyclic garbage collector off the request path.

    A request's objects die by reference counting, but with 16 requests in flight more than
    the default 700 container objects are alive at once, so the collector ran about once per
    20 requests and scanned every module, class and snapshot object each time it reached the
    oldest generation: ~30 us per request (bench.sidecar, stream@16). Freezing what start-up
    built takes it out of every scan, and a gen-0 threshold above what requests in flight
    hold means collections run only when cyclic garbage has really piled up."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scrub_logs()  # defence in depth: no line goes out with something shaped like a key
    configure_access_logger(enabled=access_log_settings(args).enabled)  # its own lines: proxy.request.access_log
    for problem in normalize_otlp_header_variables(os.environ):  # named, never shown
        log.warning("OTLP: %s", problem)
    try:
        listener_settings(args)
        egress = EgressSettings.from_environ(os.environ)  # HTTPS_PROXY, HTTP_PROXY, NO_PROXY: read once, here
    except ValueError as exc:
        print(f"modelway-proxy: {exc}", file=sys.stderr)
        return 2
    if egress.https_proxy or egress.http_proxy:
        log.info(
            "provider calls go through the proxy %s (https) / %s (http)",
            egress.https_proxy.name if egress.https_proxy else "none",
            egress.http_proxy.name if egress.http_proxy else "none",
        )
    # both ports at their caps, plus provider connections and files: room before accept() runs out
    soft, _ = raise_fd_limit(args.max_connections + args.admin_max_connections + 512)
    if soft < args.max_connections + args.admin_max_connections + 64:
        log.warning(
            "the open-file limit (%d) is below the connection caps; raise `ulimit -n` or lower --max-connections", soft
        )
    initial = None
    if args.snapshot is not None:
        from proxy.snapshot_file import SnapshotError, load_snapshot_file

        try:
            initial = load_snapshot_file(args.snapshot)
        except SnapshotError as exc:
            print(f"modelway-proxy: {exc}", file=sys.stderr)
            return 2
        log.info(
            "snapshot %s loaded from %s: %d providers, %d routes",
            initial.version,
            args.snapshot,
            len(initial.providers),
            len(initial.routes),
        )
    holder = RuntimeHolder()  # built here: the metrics read the snapshot's age from it
    telemetry = build_telemetry(service_name="modelway-proxy", holder=holder)
    runner: Callable[[Coroutine[Any, Any, None]], None]
    try:
        import uvloop  # optional: a faster event loop where installed

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    _tune_gc()
    try:
        runner(serve(args, telemetry, initial, holder, egress))
    finally:
        telemetry.shutdown()  # flushes spans and the last metrics
    return 0


if __name__ == "__main__":
    sys.exit(main())
