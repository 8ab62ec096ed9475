"""The sidecar's command line: its flags, checked, and the settings objects built from them.

`proxy.__main__` parses them once at start-up and passes each settings object to what it configures.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from proxy.http_client import AnswerLimits
from proxy.limits.settings import DEFAULT_TIMEOUT, LimitSettings
from proxy.listener import ListenerSettings
from proxy.request.access_log import AccessLogSettings
from proxy.request.backpressure import BackpressureSettings

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


def listener_settings(args: argparse.Namespace) -> tuple[ListenerSettings, ListenerSettings]:
    timeouts = {
        "header_timeout": args.header_timeout,
        "body_timeout": args.body_timeout,
        "idle_timeout": args.idle_timeout,
    }
    return (
        ListenerSettings(**timeouts, max_connections=args.max_connections),
        ListenerSettings(**timeouts, max_connections=args.admin_max_connections),
    )
