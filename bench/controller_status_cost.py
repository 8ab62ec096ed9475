"""What one status write costs the API server: server-side apply against a JSON merge patch.

    python -m bench.controller_status_cost [--objects 400] [--concurrency 16]

One go on the test harness's etcd + kube-apiserver (tests/harness/kube.py) with the CRDs:
`--objects` ModelRoutes in one namespace (created by POST, as `kubectl apply` or a GitOps
tool would leave them, with no status), then rounds of status writes, one per object each,
as the controller's status writer sends them (`--concurrency` in flight):

- `apply, first`: server-side apply of a whole route status with metadata.resourceVersion
  (a fresh leader's first write to a new object: the manager's managedFields entry is new);
- `apply`: the same again with a changed counts message (a steady-state write);
- `merge, first` / `merge`: the same two rounds on other objects as a JSON merge patch
  (application/merge-patch+json) carrying metadata.resourceVersion;
- `event`: one events.k8s.io/v1 Event per object.

Each round reports the CPU seconds kube-apiserver and etcd spent (from /proc, so whatever
else the machine runs does not count), per write and each apart, and the wall time. The
client's own CPU is not counted. Run it on an otherwise idle machine for absolute numbers;
the ratio between rounds is what the status writer's choice rests on.

--watch keeps a watch on the namespace's ModelRoutes open during the rounds, as the
controller does (its reader takes the bytes and drops them): each write's event is then
encoded and sent, as in a real cluster, instead of only going into the API server's cache.

--pprof DIR restarts the API server with --profiling=true (the harness leaves it off) and
takes a CPU profile of it during each round (`--pprof-seconds`, from 0.5 s into the round:
give the rounds enough objects to last that long), written to DIR/<round>.pprof; read them
with `go tool pprof -top DIR/apply.pprof`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.controller_processes import ROOT, cpu_seconds
from bench.controller_setup import Api, _bounded, _path, route, say
from controller.kube.client import FIELD_MANAGER, KubeClient
from controller.kube.config import load_config
from controller.kube.resources import MODEL_ROUTES
from tests.harness.kube import KubeCluster, KubeControlPlane
from tests.harness.ports import PortAllocator
from tests.harness.tools import find_tool

NAMESPACE = "cost"


def _status(revision: int) -> dict[str, Any]:
    """A route status as the controller writes it (three conditions, counts)."""
    when = "2026-01-01T00:00:00Z"

    def condition(type_: str, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": type_,
            "status": "True",
            "reason": reason,
            "message": message,
            "observedGeneration": 1,
            "lastTransitionTime": when,
        }

    return {
        "observedGeneration": 1,
        "syncedSidecars": revision,
        "totalSidecars": revision,
        "conditions": [
            condition("Accepted", "Accepted", ""),
            condition("ResolvedRefs", "ResolvedRefs", ""),
            condition("Programmed", "Programmed", f"{revision}/{revision} sidecars run generation 1"),
        ],
    }


class Pprof:
    """CPU profiles of the API server (started with --profiling=true), one per round, in a thread."""

    def __init__(self, cluster: KubeCluster, out: Path, seconds: float) -> None:
        self._cluster, self._out, self._seconds = cluster, out, seconds
        out.mkdir(parents=True, exist_ok=True)
        self._thread: threading.Thread | None = None

    def start(self, what: str) -> None:
        name = what.replace(", ", "-").replace(" ", "-")

        def fetch() -> None:
            time.sleep(0.5)  # into the round's steady part
            url = f"{self._cluster.server}/debug/pprof/profile?seconds={self._seconds:g}"
            with urllib.request.urlopen(url, context=self._cluster.ssl_context(), timeout=self._seconds + 30) as r:
                (self._out / f"{name}.pprof").write_bytes(r.read())

        self._thread = threading.Thread(target=fetch, daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None


async def _rounds(
    client: KubeClient, names: list[str], pids: list[int], concurrency: int, pprof: Pprof | None = None
) -> list[dict[str, Any]]:
    versions: dict[str, str] = {}
    for name in names:
        obj = await client.get(MODEL_ROUTES, name, namespace=NAMESPACE)
        versions[name] = obj["metadata"]["resourceVersion"]
    half = len(names) // 2
    apply_names, merge_names = names[:half], names[half:]

    async def apply(name: str, revision: int) -> None:
        body = {
            "apiVersion": MODEL_ROUTES.api_version,
            "kind": MODEL_ROUTES.kind,
            "metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": versions[name]},
            "status": _status(revision),
        }
        answer = await client.patch(
            MODEL_ROUTES,
            name,
            body,
            namespace=NAMESPACE,
            patch_type="apply",
            subresource="status",
            field_manager=FIELD_MANAGER,
            force=True,
        )
        versions[name] = answer["metadata"]["resourceVersion"]

    async def merge(name: str, revision: int) -> None:
        body = {"metadata": {"resourceVersion": versions[name]}, "status": _status(revision)}
        answer = await client.patch(
            MODEL_ROUTES,
            name,
            body,
            namespace=NAMESPACE,
            patch_type="merge",
            subresource="status",
            field_manager=FIELD_MANAGER,
        )
        versions[name] = answer["metadata"]["resourceVersion"]

    async def event(name: str, revision: int) -> None:
        await client.create_event(
            regarding={
                "apiVersion": MODEL_ROUTES.api_version,
                "kind": "ModelRoute",
                "name": name,
                "namespace": NAMESPACE,
            },
            reason="Programmed",
            note=f"{revision}/{revision} sidecars run generation 1",
            action="Program",
            reporting_instance="bench",
        )

    async def measure(
        what: str, targets: list[str], write: Callable[[str, int], Awaitable[None]], revision: int
    ) -> dict[str, Any]:
        gate = asyncio.Semaphore(concurrency)

        async def one(name: str) -> None:
            async with gate:
                await write(name, revision)

        await asyncio.sleep(1.0)  # let the API server finish whatever came before
        cpu0, wall0 = [cpu_seconds(p) for p in pids], time.monotonic()
        if pprof is not None:
            pprof.start(what)
        await asyncio.gather(*(one(n) for n in targets))
        await asyncio.sleep(0.5)  # etcd's and the watch cache's work after the last answer
        each = [(cpu_seconds(p) - c0) / len(targets) * 1000 for p, c0 in zip(pids, cpu0, strict=True)]
        wall = time.monotonic() - wall0 - 0.5
        if pprof is not None:
            await asyncio.to_thread(pprof.join)
        row = {
            "round": what,
            "writes": len(targets),
            "cpu_ms_per_write": sum(each),
            "etcd_ms_per_write": each[0],  # the harness's processes: [etcd, kube-apiserver]
            "wall_s": wall,
        }
        say(
            f"  {what:<14} {len(targets):5d} writes  {row['cpu_ms_per_write']:6.2f} ms apiserver+etcd CPU each "
            f"(etcd {each[0]:5.2f})  {wall:5.1f} s"
        )
        return row

    rows = [await measure("apply, first", apply_names, apply, 1), await measure("merge, first", merge_names, merge, 1)]
    for revision in (2, 3):
        rows.append(await measure("apply", apply_names, apply, revision))
        rows.append(await measure("merge", merge_names, merge, revision))
    rows.append(await measure("event", apply_names, event, 1))
    return rows


async def _drain_watch(client: KubeClient) -> None:
    """A watch on the namespace's routes whose events are read and dropped (see --watch)."""
    while True:
        async with contextlib.aclosing(
            client.watch(MODEL_ROUTES, resource_version=None, namespace=NAMESPACE)
        ) as events:
            async for _ in events:
                pass


async def _run(args: argparse.Namespace, cluster: KubeCluster, pids: list[int], pprof: Pprof | None) -> None:
    api = Api(cluster)
    try:
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        await api.post("/api/v1/namespaces", namespace)
        objects = [route(NAMESPACE, i) for i in range(args.objects)]
        await _bounded(objects, lambda o: api.post(_path(o), o), what="routes", progress=False)
    finally:
        await api.close()
    async with KubeClient(load_config(kubeconfig=cluster.kubeconfig)) as client:
        watcher = asyncio.create_task(_drain_watch(client)) if args.watch else None
        try:
            await _rounds(client, [f"route-{i}" for i in range(args.objects)], pids, args.concurrency, pprof)
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.controller_status_cost")
    parser.add_argument("--objects", type=int, default=400, help="ModelRoutes, half per patch type (default: 400)")
    parser.add_argument("--concurrency", type=int, default=16, help="writes in flight (default: 16)")
    parser.add_argument("--watch", action="store_true", help="keep a watch on the routes open (default: none)")
    parser.add_argument("--pprof", type=Path, help="write a CPU profile of the API server per round to this directory")
    parser.add_argument("--pprof-seconds", type=float, default=4.0, help="each profile's length (default: 4)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="modelway-bench-status-cost-"))
    plane = KubeControlPlane(
        apiserver=find_tool("kube-apiserver"), etcd=find_tool("etcd"), workdir=workdir / "kube", ports=PortAllocator()
    )
    try:
        cluster = plane.start()
        pprof = None
        if args.pprof is not None:
            # The harness's flags are a real cluster's, but for --profiling; this run alone turns it on.
            plane._apiserver_argv = [
                "--profiling=true" if a == "--profiling=false" else a for a in plane._apiserver_argv
            ]
            plane.start_apiserver()
            pprof = Pprof(cluster, args.pprof, args.pprof_seconds)
        kubectl = [str(find_tool("kubectl")), "--kubeconfig", str(cluster.kubeconfig)]
        subprocess.run([*kubectl, "apply", "-f", str(ROOT / "crds")], check=True, capture_output=True)
        wait = ["wait", "--for=condition=Established", "crd/modelroutes.modelway.io", "--timeout=60s"]
        subprocess.run([*kubectl, *wait], check=True, capture_output=True)
        say(f"{args.objects} routes, {args.concurrency} writes in flight")
        asyncio.run(_run(args, cluster, [p.proc.pid for p in plane.processes], pprof))
    finally:
        plane.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
