"""`modelway dev`: the controller and one sidecar on this machine, from a folder of YAML.

Both run as real processes, exactly as in a cluster, except that the
controller reads a folder instead of the Kubernetes API and the sidecar proves
who it is with a token made for this run. Edit the YAML and the change is live
in the sidecar within a second.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from controller import check_cli
from shared.scrub import scrub_shapes


def _relay(prefix: str, stream: IO[str], ready: threading.Event, marker: str) -> None:
    for line in stream:
        if marker in line:
            ready.set()
        sys.stdout.write(f"{prefix} {scrub_shapes(line)}")  # also what a child prints outside its logs
        sys.stdout.flush()


def _start(
    name: str, argv: list[str], marker: str, *, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True, env=env
    )
    ready = threading.Event()
    assert process.stdout is not None
    threading.Thread(target=_relay, args=(f"[{name}]", process.stdout, ready, marker), daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"modelway dev: the {name} did not start (see its output above)")
    return process


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(admin_url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(admin_url + "/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("modelway dev: the sidecar got no configuration from the controller; see the logs above")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="modelway", description="Modelway developer tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    check_cli.add_commands(commands)
    dev = commands.add_parser(
        "dev",
        help="run the controller and a sidecar locally from a folder of YAML",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dev.add_argument(
        "--config-dir",
        type=Path,
        required=True,
        help="folder of ModelProvider, ModelRoute and Secret YAML (see examples/dev/)",
    )
    dev.add_argument(
        "--namespace", default="default", help="the namespace the local sidecar belongs to (default: %(default)s)"
    )
    dev.add_argument("--port", type=int, default=15000, help="sidecar app port (default: %(default)s)")
    dev.add_argument("--admin-port", type=int, default=15020, help="sidecar admin port (default: %(default)s)")
    dev.add_argument("--controller-port", type=int, default=15012, help="controller stream port (default: %(default)s)")
    dev.add_argument(
        "--controller-admin-port",
        type=int,
        default=0,
        help="controller admin port (/healthz, /readyz, /metrics) on 127.0.0.1 (default: a free one)",
    )
    dev.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    dev.add_argument(
        "--limits-redis-url",
        default=None,
        metavar="URL",
        help="a Redis to count limits and budgets on, as in a cluster (default: $MODELWAY_LIMITS_REDIS_URL, "
        "else the sidecar counts in its own memory); handed to the controller, which sends it to the sidecar",
    )
    dev.add_argument("--limits-redis-cluster", action="store_true", help="speak Redis Cluster to that URL")
    dev.add_argument("--limits-timeout", type=float, metavar="SECONDS", help="the sidecar's wait for Redis")
    args = parser.parse_args(argv)
    if args.command == "dev" and not args.config_dir.is_dir():
        parser.error(f"--config-dir {args.config_dir} is not a folder")
    return args


def controller_limits(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The controller's limit-store flags and environment: the URL goes in the environment, never on a
    command line (where `ps` shows it to every user of the machine)."""
    env = dict(environ)
    if args.limits_redis_url:
        env["MODELWAY_LIMITS_REDIS_URL"] = args.limits_redis_url
    flags = ["--limits-redis-cluster"] if args.limits_redis_cluster else []
    if args.limits_timeout is not None:
        flags += ["--limits-timeout", str(args.limits_timeout)]
    return flags, env


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "check":
        return check_cli.run_check(args)
    if args.command == "status":
        return check_cli.run_status(args)
    from controller.sources.files import check_folder

    problems = check_folder(args.config_dir)  # once running, a bad edit is logged and the last good kept
    if problems:
        for problem in problems:
            print(f"modelway dev: {problem}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="modelway-dev-"))
    token = workdir / "sidecar.token"
    limits_args, controller_env = controller_limits(args, os.environ)
    python = sys.executable
    controller = _start(
        "controller",
        [
            python,
            "-m",
            "controller",
            "--source",
            "files",
            "--config-dir",
            str(args.config_dir),
            "--listen",
            f"127.0.0.1:{args.controller_port}",
            "--dev-token-file",
            str(token),
            "--dev-namespace",
            args.namespace,
            "--log-level",
            args.log_level,
            # loopback and a free port: a dev machine's 15014 may be taken, and nothing outside needs it
            "--admin-listen",
            f"127.0.0.1:{args.controller_admin_port or _free_port()}",
            *limits_args,
        ],
        "serving sidecar streams",
        env=controller_env,
    )
    processes = [controller]
    try:
        sidecar = _start(
            "sidecar",
            [
                python,
                "-m",
                "proxy",
                "--controller",
                f"http://127.0.0.1:{args.controller_port}",
                "--token-file",
                str(token),
                "--state-file",
                str(workdir / "snapshot.json"),
                "--port",
                str(args.port),
                "--admin-port",
                str(args.admin_port),
                "--reconnect-max-seconds",
                "2",
                "--log-level",
                args.log_level,
            ],
            "listening on",
        )
        processes.append(sidecar)
        _wait_ready(f"http://127.0.0.1:{args.admin_port}")
        print(
            f"\nmodelway dev is up. Point your SDKs at the sidecar:\n"
            f"  export OPENAI_BASE_URL=http://127.0.0.1:{args.port}/v1 OPENAI_API_KEY=unused\n"
            f"  export ANTHROPIC_BASE_URL=http://127.0.0.1:{args.port} ANTHROPIC_API_KEY=unused\n"
            f"Edit {args.config_dir}/ and changes go live; config dump: http://127.0.0.1:{args.admin_port}/config\n"
            f"Ctrl-C stops both.\n",
            flush=True,
        )
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(0.5):
            for process in processes:
                if process.poll() is not None:
                    print(f"modelway dev: a process exited with {process.returncode}; stopping", flush=True)
                    stop.set()
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
