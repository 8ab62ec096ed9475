"""`modelway check` and `modelway status`: what is wrong with the config, and who runs what.

`check` loads a folder of YAML (no cluster) or the current kubeconfig context's
objects, runs the controller's own validation and compilation on them
(`controller.check`), and prints each problem with its object, field and fix.
It exits 1 when there are errors (2 when it could not load anything), so it
fits a CI pipeline; warnings alone exit 0 unless `--strict`.

`status` lists the sidecars connected to a controller, with their workload,
the snapshot version they run and whether it is the one they should run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, TextIO

from controller.api import InvalidObject, parse_object
from controller.check import Finding, RouteStatus, analyze, has_errors, unlabelled_secret, unlabelled_secrets
from controller.kube import (
    CLUSTER_MODEL_POLICIES,
    MODEL_POLICIES,
    MODEL_PROVIDERS,
    MODEL_ROUTES,
    NAMESPACES,
    SECRETS,
    KubeClient,
    KubeError,
    ResourceType,
)
from controller.kube.config import ConfigError, load_config
from controller.kube.resources import PODS
from controller.policy import DATA_CLASS_ANNOTATION
from controller.sources.files import FileError, load_file, scan_folder
from controller.sources.kube import SECRET_SELECTOR
from controller.store import Key, Resources, ResourceStore, key_of
from controller.webhook.inject import INJECTED_ANNOTATION
from controller.workload import Workload

CHECKED_KINDS: tuple[ResourceType, ...] = (
    MODEL_PROVIDERS,
    MODEL_ROUTES,
    MODEL_POLICIES,
    CLUSTER_MODEL_POLICIES,
    NAMESPACES,
)


CHECK_HELP = """\
Runs the controller's own validation and compilation on a folder of YAML (no
cluster needed) or, with no folder, on the objects of the current kubeconfig
context, and prints each problem with its object, field and how to fix it:
objects the controller refuses, references that do not resolve, two routes for
one model, a Secret the controller cannot see (no modelway.io/credentials=true
label), a policy that leaves a route no backend for some data class, and, on a
cluster, routes no injected pod runs and sidecars behind the current generation.

exit status: 0 no errors (warnings allowed unless --strict), 1 errors found,
2 nothing could be loaded.

examples:
  modelway check examples/k8s          # in CI, before kubectl apply
  modelway check -n team-a             # the live cluster, one namespace
"""


def add_commands(commands: Any) -> None:
    check = commands.add_parser(
        "check",
        help="find problems in ModelProviders, ModelRoutes and policies (a folder, or the cluster)",
        description=CHECK_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "folder",
        nargs="?",
        type=Path,
        help="a folder of YAML to check without a cluster; left out: the current kubeconfig context's objects",
    )
    check.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    check.add_argument("-n", "--namespace", help="check this namespace only (default: all)")
    check.add_argument("-o", "--output", choices=["text", "json"], default="text")
    check.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    status = commands.add_parser(
        "status",
        help="list the sidecars connected to a controller and the snapshot each runs",
        description="Lists the sidecars connected to one controller replica (its admin port's /sidecars). "
        "In a cluster: kubectl -n modelway-system port-forward deploy/modelway-controller 15014, "
        "then run this.",
    )
    status.add_argument(
        "--admin-url", default="http://127.0.0.1:15014", help="the controller's admin port (default: %(default)s)"
    )
    status.add_argument("-o", "--output", choices=["text", "json"], default="text")


# --- check ------------------------------------------------------------------------------


def load_folder(folder: Path) -> tuple[Resources, list[Finding]]:
    """Every object in the folder; a file that cannot be used is a finding, the rest is checked."""
    store, findings = ResourceStore(), []
    seen: dict[Key, Path] = {}
    for path in sorted(scan_folder(folder)):
        try:
            resources = load_file(path)
        except FileError as exc:
            findings.append(
                Finding(
                    "error", str(path), str(exc), "fix the file; `modelway dev` keeps its last good content meanwhile"
                )
            )
            continue
        except (ValueError, TypeError, RecursionError) as exc:  # a shape the loader did not expect
            findings.append(
                Finding(
                    "error",
                    str(path),
                    f"{path} cannot be read as Kubernetes objects ({type(exc).__name__})",
                    "fix the file",
                )
            )
            continue
        for resource in resources:
            key = key_of(resource)
            if key in seen:
                findings.append(
                    Finding(
                        "warning",
                        f"{key[0]} {key[1]}/{key[2]}",
                        f"defined in {seen[key]} and again in {path}; the later one is used",
                        "keep one definition",
                    )
                )
            seen[key] = path
            store.apply(resource)
    view = store.view()
    return view, findings + unlabelled_secrets(view)


async def load_cluster(
    client: KubeClient, *, namespace: str | None
) -> tuple[Resources, list[Workload], dict[Key, RouteStatus], list[Finding]]:
    store, findings = ResourceStore(), []
    statuses: dict[Key, RouteStatus] = {}
    for rt in CHECKED_KINDS:
        listed = await client.list(rt, namespace=namespace if rt.namespaced else None)
        for obj in listed.items:
            obj.setdefault("kind", rt.kind)
            try:
                parsed = parse_object(obj)
            except ValueError as exc:
                name = (obj.get("metadata") or {}).get("name", "?")
                findings.append(Finding("error", f"{rt.kind} {name}", str(exc), "fix the object"))
                continue
            if isinstance(parsed, InvalidObject):
                store.mark_invalid(parsed)
                continue
            store.apply(parsed)
            if rt is MODEL_ROUTES:
                status = obj.get("status") or {}
                statuses[key_of(parsed)] = RouteStatus(
                    generation=parsed.metadata.generation,
                    observed_generation=int(status.get("observedGeneration") or 0),
                    synced=int(status.get("syncedSidecars") or 0),
                    total=int(status.get("totalSidecars") or 0),
                )
    secrets = await client.list(SECRETS, namespace=namespace, label_selector=SECRET_SELECTOR)
    for obj in secrets.items:
        obj.setdefault("kind", "Secret")
        store.apply(parse_object(obj))  # type: ignore[arg-type]  # a Secret is never an InvalidObject
    view = store.view()
    pods = await client.list(PODS, namespace=namespace)
    workloads = [
        _workload(pod)
        for pod in pods.items
        if ((pod.get("metadata") or {}).get("annotations") or {}).get(INJECTED_ANNOTATION) == "true"
    ]
    findings += await _unlabelled_in_cluster(client, view)
    return view, workloads, statuses, findings


def _workload(pod: dict[str, Any]) -> Workload:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    return Workload(
        namespace=str(meta.get("namespace") or "default"),
        service_account=str(spec.get("serviceAccountName") or "default"),
        labels=dict(meta.get("labels") or {}),
        data_class=(meta.get("annotations") or {}).get(DATA_CLASS_ANNOTATION),
    )


async def _unlabelled_in_cluster(client: KubeClient, view: Resources) -> list[Finding]:
    """A provider whose Secret the controller cannot see: does it exist without the label?"""
    seen = {(s.metadata.namespace, s.metadata.name) for s in view.secrets}
    findings = []
    for provider in view.providers:
        ref = provider.spec.credentials_ref
        if ref is None or (provider.metadata.namespace, ref.name) in seen:
            continue
        secret = await client.get_secret(ref.name, namespace=provider.metadata.namespace)
        if secret is not None:
            findings.append(unlabelled_secret(provider, secret))
    return findings


def print_findings(findings: list[Finding], *, output: str, out: TextIO) -> None:
    if output == "json":
        json.dump({"findings": [f.as_dict() for f in findings]}, out, indent=2)
        out.write("\n")
        return
    if not findings:
        out.write("No problems found.\n")
        return
    for finding in findings:
        out.write(
            f"{finding.severity.upper():7} {finding.object}\n        {finding.problem}\n        fix: {finding.fix}\n"
        )
    errors = sum(f.severity == "error" for f in findings)
    out.write(f"\n{errors} error(s), {len(findings) - errors} warning(s)\n")


async def _check_cluster(args: argparse.Namespace) -> list[Finding]:
    config = load_config(args.kubeconfig)
    async with KubeClient(config) as client:
        view, workloads, statuses, findings = await load_cluster(client, namespace=args.namespace)
    return findings + analyze(view, pods=workloads, statuses=statuses)


def run_check(args: argparse.Namespace, *, out: TextIO = sys.stdout) -> int:
    try:
        if args.folder is not None:
            if not args.folder.is_dir():
                print(f"modelway check: {args.folder} is not a folder", file=sys.stderr)
                return 2
            view, findings = load_folder(args.folder)
            findings += analyze(view)
        else:
            findings = asyncio.run(_check_cluster(args))
    except (ConfigError, KubeError) as exc:
        print(f"modelway check: cannot read the cluster: {exc}", file=sys.stderr)
        return 2
    print_findings(findings, output=args.output, out=out)
    if has_errors(findings) or (args.strict and findings):
        return 1
    return 0


# --- status -----------------------------------------------------------------------------


def run_status(args: argparse.Namespace, *, out: TextIO = sys.stdout) -> int:
    url = args.admin_url.rstrip("/") + "/sidecars"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            rows = json.loads(resp.read())["sidecars"]
    except (OSError, ValueError, KeyError) as exc:
        print(
            f"modelway status: cannot read {url}: {exc}\n  in a cluster, first: kubectl -n modelway-system "
            "port-forward deploy/modelway-controller 15014",
            file=sys.stderr,
        )
        return 2
    if args.output == "json":
        json.dump({"sidecars": rows}, out, indent=2)
        out.write("\n")
        return 0
    if not rows:
        out.write("No sidecars are connected to this controller replica.\n")
        return 0
    header = ("SIDECAR", "WORKLOAD", "VERSION", "UP-TO-DATE", "SNAPSHOT AGE", "CONNECTED")
    table = [header] + [
        (
            r["name"],
            r["workload"],
            r["version"] or "-",
            "yes" if r["upToDate"] else ("REFUSED" if r["refused"] else "no"),
            _age(r["snapshotAgeSeconds"]),
            _age(r["connectedSeconds"]),
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        out.write("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")
    for r in rows:
        if r["refused"]:
            out.write(f"\n{r['name']} refused snapshot {r['wantedVersion']}: {r['refused']}\n")
    return 0


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"
