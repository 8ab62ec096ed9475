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
steady state). The report also says how busy the machine was during the
changes and how much of that was other processes: on a shared 2-CPU machine
they show in the tail.

Targets (from the issue): p99 time to the last ACK < 1 s with 1,000 sidecar
connections; controller RSS < 200 MB (10^6 bytes) with 1,000 connections and
1,000 routes, judged on the peak (VmHWM) after the changes. A miss is
reported, not fatal: the exit status is non-zero only when something broke.
Results also go to bench/results/controller.json.

    python -m bench.controller [--sidecars 1000] [--routes 1000] [--changes 20]
                               [--workloads 100] [--follower] [--profile]

--workloads: how many distinct pod label sets the pods carry (the controller
compiles one snapshot per distinct workload): 100 means 10 replicas per
Deployment-like workload; --workloads equal to --sidecars gives every pod its
own labels (the controller's worst case, like StatefulSet pods).
--follower starts the controller as a non-leader replica (a Lease held by
another identity is created first), so it serves sidecars but writes no
status: the push path alone, for comparison.
--profile samples the controller with py-spy (if installed: `pip install
py-spy`) during the measured changes only, and prints the hottest functions
(own and inclusive, those in controller/ marked); without py-spy it runs the
whole controller under cProfile instead (figures are then slower than real).
The profile is kept in bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.controller_processes import PYTHON, ROOT, Clients, cpu_seconds, percentile, proc_status
from bench.controller_report import (
    LOGS,
    MEASURED_ROUTE,
    TARGET_LAST_ACK_P99_S,
    TARGET_RSS_BYTES,
    print_profile,
    print_samples,
    report,
    tree_state,
)
from bench.controller_setup import NAMESPACE, ROUTES_PER_NAMESPACE, BenchBroken, populate, providers, route, say
from tests.harness.kube import KubeCluster, KubeControlPlane
from tests.harness.ports import PortAllocator
from tests.harness.process import ManagedProcess
from tests.harness.tools import ToolMissing, find_tool

RESULTS = ROOT / "bench" / "results"

QUIET_CPU = 0.05  # CPU seconds per second below which the controller counts as idle
QUIET_TIMEOUT_S = 600.0
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
        self.sampler: subprocess.Popen[bytes] | None = None
        self.py_spy: str | None = None

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

    def machine_cpu(self) -> dict[str, float]:
        """Machine-wide busy CPU seconds and this benchmark's share (its processes and kubectl runs)."""
        busy = 0.0
        for line in Path("/proc/stat").read_text().splitlines():
            parts = line.split()
            if parts and parts[0] == "cpu":
                values = [int(v) for v in parts[1:9]]
                busy = (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")
                break
        pids = [p.proc.pid for p in (self.plane.processes if self.plane else [])]
        pids += [p.proc.pid for p in (self.controller,) if p is not None]
        pids += [self.clients.proc.pid] if self.clients is not None else []
        ours = 0.0
        for pid in pids:
            with contextlib.suppress(OSError):
                ours += cpu_seconds(pid)
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):  # the driver, and kubectl (waited children)
            usage = resource.getrusage(who)
            ours += usage.ru_utime + usage.ru_stime
        return {"busy": busy, "ours": ours, "wall": time.monotonic()}

    def wait_quiet(self, pid: int) -> float:
        """Until the controller is idle (< QUIET_CPU of a core for 2 s running): measure steady state.

        A freshly started leader first writes the status of every object (a GET, a status patch and
        Events each); changes measured during that backlog would measure the backlog.
        """
        say("waiting for the controller to go quiet (e.g. its first status pass over every object)")
        started = time.monotonic()
        quiet = 0
        last = cpu_seconds(pid)
        while quiet < 2:
            time.sleep(1.0)
            now = cpu_seconds(pid)
            busy, last = now - last, now
            quiet = quiet + 1 if busy < QUIET_CPU else 0
            waited = time.monotonic() - started
            if waited > QUIET_TIMEOUT_S:
                say(f"  still busy after {waited:.0f} s ({busy * 100:.0f}% of a core): measuring anyway")
                break
            if int(waited) % 10 == 0 and quiet == 0:
                say(f"  {waited:.0f} s: controller at {busy * 100:.0f}% of a core")
        waited = time.monotonic() - started
        say(f"  quiet after {waited:.1f} s")
        return waited

    def hold_lease(self, cluster: KubeCluster) -> None:
        """Another replica leads: the controller under test serves sidecars but writes no status."""
        from datetime import UTC, datetime

        from controller.leader import DEFAULT_LEASE_NAME

        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": DEFAULT_LEASE_NAME, "namespace": "default"},
            "spec": {
                "holderIdentity": "another-replica_bench",
                "leaseDurationSeconds": 86400,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        status, body = cluster.request("POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases", lease)
        if status not in (200, 201):
            raise BenchBroken(f"could not create the Lease for --follower: HTTP {status}: {body}")
        say(f"  Lease default/{DEFAULT_LEASE_NAME} held by another replica: the controller follows")

    def route_status(self, cluster: KubeCluster) -> dict[str, Any]:
        """The measured route's status as the controller wrote it (nothing when it does not lead)."""
        time.sleep(1.5)  # the status writer coalesces for 200 ms; give it time to write the last counts
        code, body = cluster.request(
            "GET", f"/apis/modelway.io/v1alpha1/namespaces/{NAMESPACE}/modelroutes/{MEASURED_ROUTE}"
        )
        if code != 200 or not isinstance(body, dict):
            return {}
        status = body.get("status") or {}
        return {
            "generation": body.get("metadata", {}).get("generation"),
            "observedGeneration": status.get("observedGeneration"),
            "syncedSidecars": status.get("syncedSidecars"),
            "totalSidecars": status.get("totalSidecars"),
            "programmed": next(
                (
                    f"{c.get('status')} {c.get('reason')}: {c.get('message')}"
                    for c in status.get("conditions") or []
                    if c.get("type") == "Programmed"
                ),
                None,
            ),
        }

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
            self.hold_lease(cluster)

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
        self.py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(PYTHON).parent))
        if args.profile and not self.py_spy:
            argv[1:1] = ["-m", "cProfile", "-o", str(RESULTS / "controller.prof")]
        say("starting the controller" + (" under cProfile" if args.profile and not self.py_spy else ""))
        started = time.monotonic()
        self.controller = ManagedProcess("controller", argv, controller_log, env={"PYTHONPATH": str(ROOT)}, cwd=ROOT)
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
        settle_seconds = self.wait_quiet(pid)
        rss_connected = proc_status(pid)
        cpu_before = cpu_seconds(pid), cpu_seconds(self.clients.proc.pid)
        machine_before = self.machine_cpu()
        sampler = None
        if args.profile and self.py_spy:
            (RESULTS / "controller-profile.txt").unlink(missing_ok=True)
            with (LOGS / "py-spy.log").open("wb") as spy_log:
                sampler = subprocess.Popen(
                    [
                        self.py_spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--format",
                        "raw",
                        "--function",
                        "--nonblocking",
                        "--rate",
                        "250",
                        "--output",
                        str(RESULTS / "controller-profile.txt"),
                    ],
                    stdout=spy_log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.sampler = sampler
            time.sleep(1.0)

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
        machine = {k: v - machine_before[k] for k, v in self.machine_cpu().items()}
        rss_after = proc_status(pid)
        if sampler is not None:
            sampler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            sampler.wait(30)
        route_status = self.route_status(cluster)
        return self.summarise(
            changes=changes,
            route_status=route_status,
            rss_idle=rss_idle,
            rss_connected=rss_connected,
            rss_after=rss_after,
            setup_seconds=setup_seconds,
            controller_start=controller_start,
            connect_seconds=connect_seconds,
            connect_retries=connect_retries,
            settle_seconds=settle_seconds,
            cpu_changes=cpu_changes,
            cpu_clients=cpu_clients,
            banner=banner.strip(),
            snapshot=ready,
            machine=machine,
        )

    def summarise(
        self,
        *,
        changes: list[dict[str, Any]],
        route_status: dict[str, Any],
        rss_idle: dict[str, int],
        rss_connected: dict[str, int],
        rss_after: dict[str, int],
        setup_seconds: float,
        controller_start: float,
        connect_seconds: float,
        connect_retries: int,
        settle_seconds: float,
        cpu_changes: float,
        cpu_clients: float,
        banner: str,
        snapshot: dict[str, Any],
        machine: dict[str, float],
    ) -> dict[str, Any]:
        args = self.args
        measured = [c for c in changes if not c["warmup"]]
        every_ack = [a for c in measured for a in c["acks_s"]]
        last_acks = [c["last_ack_s"] for c in measured]
        kubectl = [c["kubectl_s"] for c in measured]
        rss_peak = max(rss_after["VmHWM"], rss_connected["VmHWM"])
        result: dict[str, Any] = {
            "benchmark": "controller: kubectl apply of a ModelRoute -> last sidecar ACK",
            "config": {
                "sidecars": args.sidecars,
                "routes": args.routes,
                "changes": args.changes,
                "warmup": args.warmup,
                "workloads": args.workloads,
                "concurrency": args.concurrency,
                "profiled": args.profile,
                "follower": args.follower,
                "namespaces": max(1, math.ceil(args.routes / ROUTES_PER_NAMESPACE)),
                "providers_per_namespace": len(providers("x")),
            },
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "tree": tree_state(),
            "controller_banner": banner,
            "measured_route_status": route_status,
            "setup_seconds": round(setup_seconds, 1),
            "controller_start_seconds": round(controller_start, 2),
            "connect_seconds": connect_seconds,
            "connect_retries": connect_retries,
            "quiet_after_connect_seconds": round(settle_seconds, 1),
            "latency_s": {
                "all_acks": {
                    "n": len(every_ack),
                    "p50": percentile(every_ack, 50),
                    "p99": percentile(every_ack, 99),
                    "max": max(every_ack, default=math.nan),
                },
                "last_ack_per_change": {
                    "n": len(last_acks),
                    "p50": percentile(last_acks, 50),
                    "p99": percentile(last_acks, 99),
                    "max": max(last_acks, default=math.nan),
                },
                "kubectl": {
                    "p50": percentile(kubectl, 50),
                    "p99": percentile(kubectl, 99),
                    "max": max(kubectl, default=math.nan),
                },
            },
            "snapshot_message_bytes": snapshot.get("snapshot_bytes"),
            "websocket_compression": snapshot.get("compression"),
            "controller_cpu_seconds_during_changes": round(cpu_changes, 2),
            "clients_cpu_seconds_during_changes": round(cpu_clients, 2),
            "machine_during_changes": {
                "wall_seconds": round(machine["wall"], 1),
                "busy_cpu_seconds": round(machine["busy"], 1),
                "this_benchmark_cpu_seconds": round(machine["ours"], 1),
                "other_processes_cpu_seconds": round(max(0.0, machine["busy"] - machine["ours"]), 1),
            },
            "rss_bytes": {
                "before_sidecars": rss_idle,
                "with_sidecars": rss_connected,
                "after_changes": rss_after,
                "peak": rss_peak,
            },
            "targets": {
                "last_ack_p99_s": {
                    "target": TARGET_LAST_ACK_P99_S,
                    "value": percentile(last_acks, 99),
                    "pass": percentile(last_acks, 99) < TARGET_LAST_ACK_P99_S,
                },
                "rss_bytes": {"target": TARGET_RSS_BYTES, "value": rss_peak, "pass": rss_peak < TARGET_RSS_BYTES},
            },
            "changes": [
                {k: (round(v, 6) if isinstance(v, float) else v) for k, v in c.items() if k != "acks_s"}
                for c in changes
            ],
        }
        return result


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
        "--profile", action="store_true", help="sample the controller with py-spy during the changes (else cProfile)"
    )
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
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / "controller.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        say(f"results: {out.relative_to(ROOT)}; logs in {LOGS.relative_to(ROOT)}/")
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
        if bench.sampler is not None and bench.sampler.poll() is None:
            bench.sampler.kill()
            bench.sampler.wait(10)
        if bench.clients is not None:
            bench.clients.stop()
        if bench.controller is not None:
            bench.controller.stop(timeout=30)  # under cProfile it writes the profile on the way out
        if bench.plane is not None:
            bench.plane.stop()
        if status == 1 or args.keep:
            say(f"control plane work dir kept: {bench.workdir}")
        else:
            shutil.rmtree(bench.workdir, ignore_errors=True)
    if status == 0 and args.profile:
        if bench.py_spy:
            print_samples(RESULTS / "controller-profile.txt")
        else:
            print_profile(RESULTS / "controller.prof")
    return status


if __name__ == "__main__":
    sys.exit(main())
