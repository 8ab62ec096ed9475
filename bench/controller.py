"""`make bench-controller`: from `kubectl apply` of a ModelRoute to the last sidecar's ACK.

One machine, one go: etcd + kube-apiserver from the test harness
(tests/harness/kube.py), the CRDs, 1,000 ModelRoutes in 100 namespaces
(`bench-0` ... `bench-99`, 10 routes each, every route two rules with weighted
backends and a fallback) with their ModelProviders and a labelled Secret per
namespace; 1,000 Pods (API objects only, no kubelet) in `bench-0`, each with
its own pod-bound ServiceAccount token (audience `modelway`, TokenRequest API).
Then the controller (`python -m controller --source kube`, its own process, so
its RSS is its own) and the light clients (bench/controller_clients.py, its
own process, one WebSocket per pod) that ACK every snapshot at once. The
objects and the tokens are made by bench/controller_setup.py; this module
drives the run and reports.

Each measured change is a real `kubectl apply -f` of one ModelRoute in
`bench-0` (the route every pod sees; its upstream models change each time).
t0 is taken just before kubectl starts; a client's latency is its ACK time
minus t0. The controller's debounce (100 ms of quiet) is part of the latency
by design, and so is kubectl's own run time (shown apart, not subtracted).
The headline is the time to the LAST ack of a change: its p50 and p99 over
the changes (nearest rank: with 20 changes, p99 is the slowest change).

Measuring starts once the controller is idle after the clients connected (a
fresh leader first writes the status of every object: a backlog, not the
steady state). "Quiet" is the controller process using under 5% of a core for
2 s running, counted from the moment the last client has its first snapshot.
It is the sum of two things, shown apart: the status pass (the API server's
own counts of status writes to modelway.io objects and of Events created,
sampled from its /metrics every 2 s from the controller's start: how many, how
many by the last client's connection, and when the last of them happened,
relative to that connection) and whatever the controller does after that. The
CPU from the first connection to quiet (and to the pass's end) is given for the
controller and for etcd + kube-apiserver: a pass bound by the API server shows
there. A controller waiting on a busy API server can drop under 5% while its
pass goes on, so the changes are measured only once the API server has also
seen no status write or Event for 6 s. The quiet target is judged on the later of the
controller's quiet and its pass's end: a controller whose writes wait on the API server is
idle, not done (with few Events to send it can sit under 5% long before its pass ends). The report
also says how busy the machine was during the changes and how much of that was
other processes: on a shared 2-CPU machine they show in the tail.

Targets: p99 time to the last ACK < 1 s; controller RSS, judged on the peak
(VmHWM) after the changes, < 200 MB (10^6 bytes) with 1,000 connections and
1,000 routes, < 300 MB with 5,000 and 5,000; controller CPU per change < 400 ms
(stated for 5,000 sidecars); the controller quiet within 10 s of the last
sidecar's first snapshot. A miss is reported, not fatal: the exit status is
non-zero only when something broke. Results also go to
bench/results/controller.json (or --out); `python -m bench.controller_compare
A.json B.json ...` puts runs side by side.

    python -m bench.controller [--sidecars 1000] [--routes 1000] [--changes 20]
                               [--workloads 100] [--follower] [--profile [settle]]
                               [--tracemalloc] [--gc] [--out FILE]

--workloads: how many distinct pod label sets the pods carry (the controller
compiles one snapshot per distinct workload): 100 means 10 replicas per
Deployment-like workload; --workloads equal to --sidecars gives every pod its
own labels (the controller's worst case, like StatefulSet pods).
--follower starts the controller as a non-leader replica (a Lease held by
another identity is created first), so it serves sidecars but writes no
status: the push path alone, for comparison.
--profile samples the controller with py-spy (if installed: `pip install
py-spy`) during the measured changes only, and prints the hottest functions
(own and inclusive, those in controller/ marked); without py-spy the
controller runs as bench/controller_profiled.py, which turns cProfile on and
off by signals around the same window (figures are then slower than real).
--gc runs the controller the same way without cProfile and times its garbage
collector's passes per generation during the window (controller-<window>.gc.txt).
`--profile settle` profiles from the first sidecar's connection until the
controller is quiet (a fresh leader's status pass), `--profile all` both
windows. --tracemalloc traces the controller's allocations and writes the
largest live sites at the end of each window. The profiles are kept in
bench/results/ (controller-<window>.prof, controller-<window>.mem.txt).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.controller_processes import (
    PYTHON,
    ROOT,
    Clients,
    cpu_seconds,
    machine_cpu,
    percentile,
    proc_status,
    wait_quiet,
)
from bench.controller_profiling import Profiler
from bench.controller_report import LOGS, MEASURED_ROUTE, report, summarise
from bench.controller_setup import (
    NAMESPACE,
    ROUTES_PER_NAMESPACE,
    BenchBroken,
    WriteSampler,
    hold_lease,
    populate,
    route,
    route_status,
    say,
)
from tests.harness.kube import KubeCluster, KubeControlPlane
from tests.harness.ports import PortAllocator
from tests.harness.process import ManagedProcess
from tests.harness.tools import ToolMissing, find_tool

RESULTS = ROOT / "bench" / "results"

SETTLE_S = 0.5  # after a change is fully ACKed: longer than the debounce, so stragglers show up as "extra"


# --- the run --------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.kubectl = str(find_tool("kubectl"))  # ToolMissing (with how to build it) before anything starts
        self.apiserver, self.etcd = find_tool("kube-apiserver"), find_tool("etcd")
        self.workdir = Path(tempfile.mkdtemp(prefix="modelway-bench-controller-"))
        self.plane: KubeControlPlane | None = None
        self.controller: ManagedProcess | None = None
        self.clients: Clients | None = None
        self.writes: WriteSampler | None = None
        self.profiler = Profiler(args, results=RESULTS)

    def kubectl_run(self, cluster: KubeCluster, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.kubectl, "--kubeconfig", str(cluster.kubeconfig), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise BenchBroken(f"kubectl {' '.join(argv)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def pids(self) -> list[int]:
        """This benchmark's long-running processes: the control plane, the controller, the clients."""
        processes = [*(self.plane.processes if self.plane else []), *([self.controller] if self.controller else [])]
        return [p.proc.pid for p in processes] + ([self.clients.proc.pid] if self.clients is not None else [])

    def run(self) -> dict[str, Any]:
        args = self.args
        LOGS.mkdir(parents=True, exist_ok=True)
        say(f"control plane: etcd + kube-apiserver in {self.workdir}")
        self.plane = KubeControlPlane(
            apiserver=self.apiserver, etcd=self.etcd, workdir=self.workdir / "kube", ports=PortAllocator()
        )
        cluster = self.plane.start()
        self.kubectl_run(cluster, "apply", "-f", str(ROOT / "crds"))
        self.kubectl_run(
            cluster,
            "wait",
            "--for=condition=Established",
            "crd/modelroutes.modelway.io",
            "crd/modelproviders.modelway.io",
            "--timeout=60s",
        )

        namespaces = max(1, math.ceil(args.routes / ROUTES_PER_NAMESPACE))
        say(
            f"creating {args.routes} routes in {namespaces} namespaces, {args.sidecars} pods "
            f"({args.workloads} workloads) and their tokens"
        )
        started = time.monotonic()
        tokens = asyncio.run(populate(cluster, routes=args.routes, sidecars=args.sidecars, workloads=args.workloads))
        setup_seconds = time.monotonic() - started
        tokens_file = self.workdir / "tokens.txt"
        fd = os.open(tokens_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(tokens) + "\n")

        # The measured route goes through kubectl once before the controller starts, so every
        # measured apply is an ordinary update of a kubectl-managed object.
        route_file = self.workdir / "route.yaml"
        revision = 1
        route_file.write_text(yaml.safe_dump(route(NAMESPACE, 0, revision=revision), sort_keys=False))
        self.kubectl_run(cluster, "apply", "-f", str(route_file))

        if args.follower:
            hold_lease(cluster)

        ports = PortAllocator()
        port = ports.take()
        controller_log = LOGS / "controller.log"
        controller_log.unlink(missing_ok=True)
        argv = [
            PYTHON,
            "-m",
            "controller",
            "--source",
            "kube",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--listen",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "--admin-listen",
            f"127.0.0.1:{ports.take()}",
        ]  # not the fixed 15014: a shared machine
        env = {"PYTHONPATH": str(ROOT)}
        if self.profiler.windows() and not self.profiler.uses_py_spy():
            argv[1:3] = ["-m", "bench.controller_profiled"]  # cProfile for a window, chosen by signals
            env["BENCH_PROFILE_OUT"] = str(RESULTS / "controller.prof")
            if args.tracemalloc:
                env["BENCH_TRACEMALLOC"] = "1"
            if args.gc:
                env["BENCH_GC"] = "1"
                if not args.profile:
                    env["BENCH_NO_CPROFILE"] = "1"
        say("starting the controller" + (" (profiled: slower than real)" if args.profile or args.tracemalloc else ""))
        self.writes = WriteSampler(cluster)  # the API server's count of status writes and Events, every 2 s
        started = time.monotonic()
        self.controller = ManagedProcess("controller", argv, controller_log, env=env, cwd=ROOT)
        self.controller.wait_ready(
            lambda: "serving sidecar streams" in controller_log.read_text(errors="replace"),
            timeout=180,
            what="serving sidecar streams",
        )
        controller_start = time.monotonic() - started
        banner = next(line for line in controller_log.read_text().splitlines() if "serving sidecar streams" in line)
        say(f"  {banner.strip()} ({controller_start:.1f} s)")
        pid = self.controller.proc.pid
        time.sleep(1.0)
        rss_idle = proc_status(pid)
        plane_pids = [p.proc.pid for p in self.plane.processes]
        cpu_start = cpu_seconds(pid), sum(cpu_seconds(p) for p in plane_pids)

        self.profiler.start(pid, "settle")
        say(f"connecting {args.sidecars} clients, {args.concurrency} at a time")
        self.clients = Clients(
            f"ws://127.0.0.1:{port}/v1/stream", tokens_file, args.concurrency, LOGS / "controller-clients.log"
        )
        while True:
            ready = self.clients.next_event(timeout=300)
            if ready["event"] == "progress":
                say(f"  {ready['connected']}/{ready['total']} clients have their first snapshot")
            elif ready["event"] == "ready":
                break
        connect_seconds, connect_retries = ready["seconds"], ready["retries"]
        say(f"  all connected in {connect_seconds:.1f} s ({connect_retries} connect retries)")
        connected_at = time.monotonic()
        writes_by_connect = self.writes.samples[-1][1]
        settle_seconds = wait_quiet(pid)
        # From the first sidecar's connection to a quiet controller: its first status pass, the API server's share.
        cpu_connect = cpu_seconds(pid) - cpu_start[0], sum(cpu_seconds(p) for p in plane_pids) - cpu_start[1]
        # A controller waiting on a busy API server can look quiet while its status pass goes on: the
        # changes are measured only once the API server has seen no status write or Event for 6 s.
        self.writes.wait_still()
        self.writes.stop()
        status_pass = {
            **{k: v for k, v in self.writes.writes_since_start().items()},
            "by_last_connection": {k: v - self.writes.samples[0][1][k] for k, v in writes_by_connect.items()},
            "ended_after_connect_s": round(self.writes.last_write_at() - connected_at, 1),
            "cpu_seconds_connect_to_end": {
                "controller": round(cpu_seconds(pid) - cpu_start[0], 1),
                "control_plane": round(sum(cpu_seconds(p) for p in plane_pids) - cpu_start[1], 1),
            },
        }
        say(f"  status pass over {status_pass['ended_after_connect_s']:.0f} s after the clients connected")
        self.profiler.stop(pid, "settle")
        rss_connected = proc_status(pid)
        cpu_before = cpu_seconds(pid), cpu_seconds(self.clients.proc.pid)
        machine_before = machine_cpu(self.pids())
        self.profiler.start(pid, "changes")

        changes: list[dict[str, Any]] = []
        total = args.warmup + args.changes
        say(
            f"changes: {args.warmup} warm-up + {args.changes} measured, each `kubectl apply -f` of "
            f"{NAMESPACE}/{MEASURED_ROUTE}"
        )
        for i in range(total):
            revision += 1
            route_file.write_text(yaml.safe_dump(route(NAMESPACE, 0, revision=revision), sort_keys=False))
            self.clients.send({"cmd": "mark", "id": i})
            extra = self.clients.expect("marked", timeout=30)["extra"]
            t0 = time.monotonic()
            applied = subprocess.run(
                [self.kubectl, "--kubeconfig", str(cluster.kubeconfig), "apply", "-f", str(route_file)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            kubectl_seconds = time.monotonic() - t0
            if applied.returncode != 0:
                raise BenchBroken(f"change {i}: kubectl apply failed ({applied.returncode}):\n{applied.stderr}")
            if "configured" not in applied.stdout:
                raise BenchBroken(f"change {i}: kubectl did not change the route: {applied.stdout.strip()}")
            self.clients.send({"cmd": "wait", "id": i, "timeout": max(1.0, args.timeout - kubectl_seconds)})
            answer = self.clients.next_event(timeout=args.timeout + 30)
            if answer["event"] == "timeout":
                raise BenchBroken(
                    f"change {i}: only {answer['have']}/{args.sidecars} clients ACKed a new snapshot within "
                    f"{args.timeout:.0f} s of t0; {answer['missing']} missing (e.g. clients {answer['sample']})"
                    + (f"; {answer['broken']}" if answer.get("broken") else "")
                    + f"\ncontroller log {controller_log}:\n{self.controller.log_tail(20)}"
                )
            if answer["event"] != "done":
                raise BenchBroken(f"change {i}: unexpected answer from the clients: {answer}")
            acks = [a - t0 for _, a, _ in answer["acks"]]
            receives = [r - t0 for r, _, _ in answer["acks"]]
            versions = {v for _, _, v in answer["acks"]}
            if i > 0 and changes:
                changes[-1]["extra_snapshots"] = extra
            change = {
                "index": i,
                "warmup": i < args.warmup,
                "kubectl_s": kubectl_seconds,
                "first_ack_s": min(acks),
                "p50_s": percentile(acks, 50),
                "p99_s": percentile(acks, 99),
                "last_ack_s": max(acks),
                "last_receive_s": max(receives),
                "versions": len(versions),
                "extra_snapshots": 0,
                "acks_s": acks,
            }
            changes.append(change)
            say(
                f"  change {i + 1:2d}/{total}{' (warm-up)' if change['warmup'] else '          '}  kubectl "
                f"{kubectl_seconds * 1000:6.1f} ms   first ack {min(acks) * 1000:6.1f} ms   "
                f"p99 {change['p99_s'] * 1000:6.1f} ms   last ack {max(acks) * 1000:6.1f} ms"
            )
            time.sleep(SETTLE_S)
        self.clients.send({"cmd": "mark", "id": total})
        if changes:
            changes[-1]["extra_snapshots"] = self.clients.expect("marked", timeout=30)["extra"]
        cpu_changes = cpu_seconds(pid) - cpu_before[0]
        cpu_clients = cpu_seconds(self.clients.proc.pid) - cpu_before[1]
        machine = {k: v - machine_before[k] for k, v in machine_cpu(self.pids()).items()}
        rss_after = proc_status(pid)
        self.profiler.stop(pid, "changes")
        return summarise(
            args,
            changes=changes,
            route_status=route_status(cluster, MEASURED_ROUTE),
            rss_idle=rss_idle,
            rss_connected=rss_connected,
            rss_after=rss_after,
            setup_seconds=setup_seconds,
            controller_start=controller_start,
            connect_seconds=connect_seconds,
            connect_retries=connect_retries,
            settle_seconds=settle_seconds,
            cpu_connect=cpu_connect,
            status_pass=status_pass,
            cpu_changes=cpu_changes,
            cpu_clients=cpu_clients,
            banner=banner.strip(),
            snapshot=ready,
            machine=machine,
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.controller",
        description="kubectl apply of a ModelRoute -> last sidecar ACK, and controller RSS",
    )
    parser.add_argument("--sidecars", type=int, default=1000, help="simulated sidecar connections (default: 1000)")
    parser.add_argument("--routes", type=int, default=1000, help="ModelRoutes, 10 per namespace (default: 1000)")
    parser.add_argument("--changes", type=int, default=20, help="measured kubectl applies (default: 20)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured changes first (default: 1)")
    parser.add_argument(
        "--workloads",
        type=int,
        default=100,
        help="distinct pod label sets, i.e. snapshots to compile per change (default: 100)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds from t0 for every client to ACK a change (default: 30)"
    )
    parser.add_argument("--concurrency", type=int, default=50, help="clients connecting at once (default: 50)")
    parser.add_argument(
        "--follower", action="store_true", help="run the controller as a non-leader replica (no status writes)"
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="changes",
        choices=["changes", "settle", "all"],
        help="profile the controller during the measured changes (py-spy if installed, else cProfile); "
        "'settle': from the first sidecar's connection until the controller is quiet; 'all': both (cProfile)",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace the controller's allocations (slow) and write the largest live sites after the profiled "
        "window (or the changes) to bench/results/controller.mem.txt",
    )
    parser.add_argument(
        "--gc",
        action="store_true",
        help="time the controller's garbage collector passes during the profiled window (or the changes) and "
        "write them per generation to bench/results/controller-<window>.gc.txt (no cProfile unless --profile)",
    )
    parser.add_argument("--out", type=Path, help="results file (default: bench/results/controller.json)")
    parser.add_argument("--keep", action="store_true", help="keep the control plane's work dir")
    args = parser.parse_args(argv)
    if min(args.sidecars, args.routes, args.changes, args.workloads, args.concurrency) < 1 or args.warmup < 0:
        parser.error("counts must be positive")
    args.workloads = min(args.workloads, args.sidecars)
    return args


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds through the cleanup below, like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        bench = Bench(args)
    except ToolMissing as exc:
        say(f"error: {exc}")
        return 2
    status = 1
    try:
        result = bench.run()
        report(result)
        out = args.out or RESULTS / "controller.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        say(f"results: {out}; logs in {LOGS.relative_to(ROOT)}/")
        status = 0
    except BenchBroken as exc:
        say(f"\nBROKEN: {exc}")
    except KeyboardInterrupt:
        say("\ninterrupted")
        status = 130
    except Exception as exc:
        import traceback

        traceback.print_exc()
        say(f"\nBROKEN: {type(exc).__name__}: {exc}")
    finally:
        if bench.writes is not None:
            bench.writes.stop()
        bench.profiler.kill()
        if bench.clients is not None:
            bench.clients.stop()
        if bench.controller is not None:
            bench.controller.stop(timeout=30)
        if bench.plane is not None:
            bench.plane.stop()
        if status == 1 or args.keep:
            say(f"control plane work dir kept: {bench.workdir}")
        else:
            shutil.rmtree(bench.workdir, ignore_errors=True)
    if status == 0:
        bench.profiler.print_results()
    return status


if __name__ == "__main__":
    sys.exit(main())
