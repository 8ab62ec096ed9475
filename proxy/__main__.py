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
from pathlib import Path
from typing import Any

from aiohttp import web

from proxy.admin import build_admin_app
from proxy.auth.pod_identity import keep_refreshed, pod_identity
from proxy.experiments import ExperimentCounts
from proxy.http_client import AnswerLimits
from proxy.limits.settings import DEFAULT_TIMEOUT, LimitSettings
from proxy.listener import GuardedSite, ListenerSettings, install_fd_exhaustion_logging, raise_fd_limit
from proxy.policy.audit import AuditLog
from proxy.request.access_log import AccessLog, AccessLogSettings, configure_access_logger
from proxy.request.admit import Admission
from proxy.request.backpressure import BackpressureSettings
from proxy.runtime import Runtime, RuntimeHolder
from proxy.server import ServerSettings, SidecarRunner, build_app
from proxy.snapshot import Snapshot
from proxy.sync import ControllerSync, SyncSettings, load_saved
from proxy.telemetry import Telemetry, build_telemetry
from shared.scrub import normalize_otlp_header_variables, scrub_logs

log = logging.getLogger("modelway.proxy")
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="modelway-proxy",
        description=(
            "The Modelway sidecar: OpenAI- and Anthropic-compatible endpoints that route, translate, "
            "retry and trace each LLM call to the right provider. Its rules come from the Modelway "
            "controller (--controller) or, without a cluster, from a snapshot file (--snapshot)."
        ),
        epilog=(
            "Tracing follows the standard OTEL_* variables: set OTEL_EXPORTER_OTLP_ENDPOINT to export "
            "spans (OTLP over HTTP, or gRPC with OTEL_EXPORTER_OTLP_PROTOCOL=grpc)."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--snapshot", type=Path, metavar="FILE", help="routing snapshot (YAML or JSON), re-read when it changes"
    )
    source.add_argument(
        "--controller",
        metavar="URL",
        default=env("MODELWAY_CONTROLLER") or None,
        help="controller stream URL, e.g. https://modelway-controller.modelway-system.svc:15012",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=Path(env("MODELWAY_TOKEN_FILE", "/var/run/secrets/modelway/token")),
        help="projected ServiceAccount token (audience modelway) shown to the controller (default: %(default)s)",
    )
    parser.add_argument(
        "--ca-file",
        type=Path,
        default=Path(p) if (p := env("MODELWAY_CA_FILE")) else None,
        help="CA bundle that signed the controller's serving certificate",
    )
    parser.add_argument("--ca-pem", default=env("MODELWAY_CA_PEM") or None, metavar="PEM", help=argparse.SUPPRESS)
    parser.add_argument(
        "--state-file",
        type=Path,
        default=Path(p) if (p := env("MODELWAY_STATE_FILE")) else None,
        help="where to keep the last good snapshot, so a restart serves it while the "
        "controller is away (an emptyDir in Kubernetes)",
    )
    parser.add_argument(
        "--reconnect-max-seconds",
        type=float,
        default=30.0,
        help="longest wait between attempts to reach the controller (default: %(default)s)",
    )
    parser.add_argument(
        "--experiment-report-seconds",
        type=float,
        default=5.0,
        help="how often experiment counts go to the controller, when they moved (default: %(default)s)",
    )
    parser.add_argument(
        "--host",
        default=env("MODELWAY_HOST", "127.0.0.1"),
        help="address for the app-facing port (default: %(default)s)",
    )
    parser.add_argument(
        "--port", type=int, default=int(env("MODELWAY_PORT", "15000")), help="app-facing port (default: %(default)s)"
    )
    parser.add_argument(
        "--admin-host",
        default=env("MODELWAY_ADMIN_HOST", "127.0.0.1"),
        help="address for the admin port; the injected sidecar uses 0.0.0.0 so the kubelet "
        "can probe it (default: %(default)s)",
    )
    parser.add_argument(
        "--admin-port",
        type=int,
        default=int(env("MODELWAY_ADMIN_PORT", "15020")),
        help="admin port for /healthz, /readyz, /config on 127.0.0.1 (default: %(default)s)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=8 * 1024 * 1024,
        help="largest request body accepted, else 413 (default: %(default)s)",
    )
    answers = parser.add_argument_group(
        "provider answers",
        "limits past which an answer is refused (502, the next backend tried) and its connection closed",
    )
    answers.add_argument(
        "--max-answer-bytes",
        type=int,
        default=32 * 1024 * 1024,
        help="largest whole (non-streamed) answer body, after gzip/deflate decoding; also the most "
        "a compressed stream may inflate to (default: %(default)s)",
    )
    answers.add_argument(
        "--max-stream-event-bytes",
        type=int,
        default=1024 * 1024,
        help="largest server-sent event (or line) of a streamed answer (default: %(default)s)",
    )
    answers.add_argument(
        "--max-answer-headers", type=int, default=100, help="most headers an answer may have (default: %(default)s)"
    )
    answers.add_argument(
        "--max-answer-header-bytes",
        type=int,
        default=64 * 1024,
        help="largest answer head: status line and headers (default: %(default)s)",
    )
    limits = parser.add_argument_group(
        "limits",
        "where the counters of the policies' limits, budgets and the providers' capacity live. The controller's "
        "store (sent with the rules) wins; else --limits-redis-url; else the sidecar's memory (exact for one "
        "sidecar only). Nothing is counted, and no Redis client is loaded, until the rules set a limit",
    )
    limits.add_argument(
        "--limits-redis-url",
        metavar="URL",
        default=env("MODELWAY_LIMITS_REDIS_URL") or None,
        help="Redis shared by every sidecar: redis://[:password@]host:6379/0, rediss://, unix://, or "
        "redis+sentinel://[:password@]host:26379[,host:26379]/service[/db]; env MODELWAY_LIMITS_REDIS_URL "
        "(better than the flag: a password on the command line shows in the process list); never logged",
    )
    limits.add_argument(
        "--limits-redis-cluster",
        action="store_true",
        default=env("MODELWAY_LIMITS_REDIS_CLUSTER", "").lower() == "true",
        help="speak Redis Cluster to the URL's node (env MODELWAY_LIMITS_REDIS_CLUSTER=true)",
    )
    limits.add_argument(
        "--limits-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="longest wait for Redis per check; past it each limit follows its failureMode (open: serve "
        "uncounted, closed: 503) (default: %(default)s)",
    )
    bounds = parser.add_argument_group(
        "backpressure",
        "how many requests go out at once, so a slow provider cannot pile them up in the pod's memory. Past "
        "a bound a request waits in a short queue; past the queue, a full backend sends it to the rule's next "
        "backend and a full route refuses it: 503 (code overloaded) with retry-after. The defaults sit far "
        "above what one app's pod sends (a few, or a few dozen, calls at once) and far below what fills a "
        "sidecar's memory (each request holds its body and its answer's buffers): they bite only when a "
        "provider stalls and requests keep coming. 0 turns a bound off",
    )
    bounds.add_argument(
        "--max-in-flight-per-backend",
        type=int,
        default=256,
        metavar="N",
        help="calls one backend (provider/model) has at once, a stream until its last byte (default: %(default)s)",
    )
    bounds.add_argument(
        "--max-in-flight-per-route",
        type=int,
        default=512,
        metavar="N",
        help="requests one route serves at once, retries and fallbacks included (default: %(default)s)",
    )
    bounds.add_argument(
        "--max-queued",
        type=int,
        default=128,
        metavar="N",
        help="requests that may wait for a slot, per route and per backend (default: %(default)s)",
    )
    bounds.add_argument(
        "--queue-wait",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="longest wait in the queue before the request is refused, or tries the next backend; also "
        "the retry-after the refusal suggests (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level", default=env("MODELWAY_LOG_LEVEL", "info"), choices=["debug", "info", "warning", "error"]
    )
    access = parser.add_argument_group(
        "access log",
        "one JSON line per request on stdout (logger modelway.access): time, workload, route, rule, backend, "
        "status, error type, tokens in/out, cost, duration, time to first token, data class, attempts, "
        "trace id; never prompt text or keys",
    )
    access.add_argument(
        "--access-log", choices=["on", "off"], default="on", help="write the access log (default: %(default)s)"
    )
    access.add_argument(
        "--access-log-sample",
        type=float,
        default=1.0,
        metavar="FRACTION",
        help="log this fraction of the successful requests, at random; failed ones are always logged "
        "(0: failures only; default: %(default)s)",
    )
    parser.add_argument("--reload-interval", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--reload-stable-seconds",
        type=float,
        default=2.0,
        help="with --snapshot: an edit that removes most routes goes live only once the file has "
        "not changed for this long, or at once when written by rename (default: %(default)s)",
    )
    ports = parser.add_argument_group("connections (app and admin ports)")
    ports.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="close a connection whose request head is not complete this long after it opened, or "
        "after the head's first byte (default: %(default)s)",
    )
    ports.add_argument(
        "--body-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="answer 408 when a request body is not complete this long after its head (default: %(default)s)",
    )
    ports.add_argument(
        "--idle-timeout",
        type=float,
        default=75.0,
        metavar="SECONDS",
        help="close a keep-alive connection idle this long (default: %(default)s)",
    )
    ports.add_argument(
        "--max-connections",
        type=int,
        default=1024,
        help="connections the app port holds; past it the oldest idle or half-sent one is closed, "
        "or when all are busy the new one gets a 503 (default: %(default)s)",
    )
    ports.add_argument(
        "--admin-max-connections", type=int, default=128, help="the same for the admin port (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    for flag in ("max_answer_bytes", "max_stream_event_bytes", "max_answer_headers", "max_answer_header_bytes"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be a positive integer")
    if not 0 <= args.access_log_sample <= 1:
        parser.error("--access-log-sample must be a fraction from 0 to 1")
    if not args.experiment_report_seconds > 0:
        parser.error("--experiment-report-seconds must be more than 0")
    if not 0 < args.limits_timeout <= 5:
        parser.error("--limits-timeout must be more than 0 and at most 5 seconds")
    if args.limits_redis_url is not None and args.limits_redis_url.partition("://")[0] not in REDIS_SCHEMES:
        # (the URL itself is not echoed: it may hold a password)
        parser.error(f"--limits-redis-url must start with one of {', '.join(s + '://' for s in REDIS_SCHEMES)}")
    try:
        backpressure_settings(args)
    except ValueError as exc:
        parser.error(f"backpressure: {exc}")
    return args


def limit_settings(args: argparse.Namespace) -> LimitSettings:
    return LimitSettings(
        redis_url=args.limits_redis_url, timeout_seconds=args.limits_timeout, cluster=args.limits_redis_cluster
    )


def access_log_settings(args: argparse.Namespace) -> AccessLogSettings:
    return AccessLogSettings(enabled=args.access_log == "on", sample=args.access_log_sample)


def backpressure_settings(args: argparse.Namespace) -> BackpressureSettings:
    return BackpressureSettings(
        max_in_flight_per_backend=args.max_in_flight_per_backend,
        max_in_flight_per_route=args.max_in_flight_per_route,
        max_queued=args.max_queued,
        queue_wait_seconds=args.queue_wait,
    )


def answer_limits(args: argparse.Namespace) -> AnswerLimits:
    return AnswerLimits(
        max_body_bytes=args.max_answer_bytes,
        max_event_bytes=args.max_stream_event_bytes,
        max_header_count=args.max_answer_headers,
        max_header_bytes=args.max_answer_header_bytes,
    )


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
    args: argparse.Namespace, telemetry: Telemetry, initial: Snapshot | None, holder: RuntimeHolder | None = None
) -> None:
    holder = holder or RuntimeHolder()
    # The pod's own AWS identity (IRSA), for Bedrock providers configured without keys: one holder
    # for every snapshot, refreshed by its own task.
    aws_identity = pod_identity(os.environ)
    build = functools.partial(Runtime.build, aws_identity=aws_identity)
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
    app_ports, admin_ports = _listener_settings(args)
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
        await runner.cleanup()
        await admin.cleanup()
        if export_task is not None:
            export_task.cancel()
            export.collect_now()  # the last totals, posted by telemetry.shutdown()


def _listener_settings(args: argparse.Namespace) -> tuple[ListenerSettings, ListenerSettings]:
    timeouts = {
        "header_timeout": args.header_timeout,
        "body_timeout": args.body_timeout,
        "idle_timeout": args.idle_timeout,
    }
    return (
        ListenerSettings(**timeouts, max_connections=args.max_connections),
        ListenerSettings(**timeouts, max_connections=args.admin_max_connections),
    )


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
        _listener_settings(args)
    except ValueError as exc:
        print(f"modelway-proxy: {exc}", file=sys.stderr)
        return 2
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
        runner(serve(args, telemetry, initial, holder))
    finally:
        telemetry.shutdown()  # flushes spans and the last metrics
    return 0


if __name__ == "__main__":
    sys.exit(main())
