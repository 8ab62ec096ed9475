"""`modelway-proxy`: the sidecar. Settings are read here, once, and passed down."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from proxy.admin import build_admin_app
from proxy.runtime import Runtime, RuntimeHolder
from proxy.server import ServerSettings, build_app
from proxy.snapshot import Snapshot
from proxy.snapshot_file import SnapshotError, load_snapshot_file, watch_snapshot_file
from proxy.telemetry import Telemetry, build_tracer_provider

log = logging.getLogger("modelway.proxy")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="modelway-proxy",
        description=(
            "The Modelway sidecar: OpenAI- and Anthropic-compatible endpoints that route, translate, "
            "retry and trace each LLM call to the right provider."
        ),
        epilog=(
            "Tracing follows the standard OTEL_* variables: set OTEL_EXPORTER_OTLP_ENDPOINT to export "
            "spans (OTLP over HTTP, or gRPC with OTEL_EXPORTER_OTLP_PROTOCOL=grpc)."
        ),
    )
    parser.add_argument("--snapshot", type=Path, required=True, metavar="FILE",
                        help="routing snapshot (YAML or JSON); reloaded when it changes")
    parser.add_argument("--host", default=os.environ.get("MODELWAY_HOST", "127.0.0.1"),
                        help="address for the app-facing port (default: %(default)s)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("MODELWAY_PORT", "15000")),
                        help="app-facing port (default: %(default)s)")
    parser.add_argument("--admin-port", type=int, default=int(os.environ.get("MODELWAY_ADMIN_PORT", "15020")),
                        help="admin port for /healthz, /readyz, /config on 127.0.0.1 (default: %(default)s)")
    parser.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024,
                        help="largest request body accepted, else 413 (default: %(default)s)")
    parser.add_argument("--log-level", default=os.environ.get("MODELWAY_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--reload-interval", type=float, default=1.0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace, snapshot: Snapshot, telemetry: Telemetry) -> None:
    holder = RuntimeHolder()
    holder.swap(Runtime.build(snapshot))

    def on_change(new: Snapshot) -> None:
        try:
            runtime = Runtime.build(new)
        except Exception:  # a snapshot that validates but cannot be compiled: keep serving
            log.exception("snapshot %s could not be compiled; keeping %s", new.version, snapshot.version)
            return
        holder.swap(runtime)
        log.info("snapshot %s is live (%d routes)", new.version, len(new.routes))

    app = build_app(holder=holder, telemetry=telemetry, settings=ServerSettings(max_body_bytes=args.max_body_bytes))
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    admin = web.AppRunner(build_admin_app(holder=holder), access_log=None)
    await runner.setup()
    await admin.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    await web.TCPSite(admin, "127.0.0.1", args.admin_port).start()
    log.info("snapshot %s loaded: %d providers, %d routes (%s)", snapshot.version, len(snapshot.providers),
             len(snapshot.routes), ", ".join(holder.current.table.models) if holder.current else "")
    # Tests and `modelway dev` wait for this line.
    print(f"modelway-proxy listening on http://{args.host}:{args.port} admin http://127.0.0.1:{args.admin_port}",
          flush=True)
    watcher = asyncio.create_task(watch_snapshot_file(args.snapshot, on_change=on_change,
                                                      interval=args.reload_interval))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await runner.cleanup()
        await admin.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        snapshot = load_snapshot_file(args.snapshot)
    except SnapshotError as exc:
        print(f"modelway-proxy: {exc}", file=sys.stderr)
        return 2
    tracer_provider = build_tracer_provider(service_name="modelway-proxy")
    telemetry = Telemetry(tracer=tracer_provider.get_tracer("modelway.proxy") if tracer_provider else None)
    try:
        import uvloop  # optional: a faster event loop where installed

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(serve(args, snapshot, telemetry))
    finally:
        if tracer_provider is not None:
            tracer_provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
