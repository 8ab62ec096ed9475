"""Session fixtures for the real-component harness.

Use from any conftest.py::

    from tests.harness.fixtures import *  # noqa: F403

Fixtures (all session-scoped, started on first use, stopped at session end):

- ``kube``: KubeCluster - etcd + kube-apiserver; ``.kubeconfig`` (admin),
  ``.server``, ``.ca`` (CertAuthority; ``.ca.ca_pem`` is a caBundle),
  ``.admin`` (client cert pair), ``.ssl_context()``, ``.request(method, path, body)``,
  ``.issue_serving_cert(name)`` for webhook servers.
- ``kube_control_plane``: KubeControlPlane behind ``kube``: ``.stop_apiserver()``,
  ``.start_apiserver()``, ``.restart_apiserver()`` (same port and etcd, state kept).
- ``kubectl``: Kubectl bound to ``kube`` - ``kubectl("get", "ns")``,
  ``kubectl.json("get", "crd")``, ``kubectl.apply(manifest)``.
- ``helm``: Helm bound to ``kube``; ``helm_offline``: Helm for template/lint
  without starting a cluster.
- ``jaeger``: JaegerServer - ``.otlp_grpc_endpoint``, ``.otlp_http_endpoint``,
  ``.query_url``, ``.traces(service)``, ``.wait_for_traces(service, pred)``.
- ``redis``: RedisServer - ``.host``, ``.port``, ``.url``, ``.cli(*args)``.
- ``own_redis``: RestartableRedis - a redis-server of the test's own (function scope):
  ``.url``, ``.kill()``, ``.signal(SIGSTOP)``, ``.start()`` again on the same port, ``.server``,
  ``.cli(*args)``; it requires the password that ``own_redis_password`` gives (None: no password;
  a module overrides that fixture to set one).
- ``node``: NodeCluster - a one-node cluster that runs pods (its own etcd and
  apiserver, containerd, kubelet, controller-manager, scheduler, kube-proxy,
  CoreDNS; tests/harness/node.py); ``.kubeconfig`` (admin), ``.kube``
  (KubeCluster), ``.images`` (name -> image reference on the node). Needs root.
- ``node_kubectl``: Kubectl bound to ``node``.
- ``harness``: the session's work dir (component logs live there), ports.

A missing binary fails the test with how to build it (never a skip). When a
test that used a component fails, the tails of the component logs are
attached to its report.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .cli import Helm, Kubectl
from .jaeger import JaegerProcess, JaegerServer
from .kube import KubeCluster, KubeControlPlane
from .node import KubeNode, NodeCluster
from .ports import PortAllocator
from .process import ManagedProcess
from .redis import RedisProcess, RedisServer, RestartableRedis
from .tools import TOOLS_BIN, ToolMissing, find_tool

__all__ = [
    "harness",
    "helm",
    "helm_offline",
    "jaeger",
    "kube",
    "kube_control_plane",
    "kubectl",
    "node",
    "node_kubectl",
    "own_redis",
    "own_redis_password",
    "pytest_runtest_makereport",
    "redis",
]

LOG_TAIL_LINES = 40
# HarnessSession.components key -> the fixture that starts those processes.
_FIXTURE_OF = {"kube": "kube_control_plane"}


@dataclass
class HarnessSession:
    workdir: Path
    ports: PortAllocator = field(default_factory=PortAllocator)
    # fixture name -> the processes it started, for log reports.
    components: dict[str, list[ManagedProcess]] = field(default_factory=dict)


_SESSION_KEY = pytest.StashKey[HarnessSession]()


def tool(name: str) -> Path:
    """The binary, or fail the test saying how to get it (no silent skips)."""
    try:
        return find_tool(name)
    except ToolMissing as e:
        message = str(e)
    pytest.fail(message, pytrace=False)  # outside `except`: no chained traceback


@pytest.fixture(scope="session")
def harness(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> HarnessSession:
    session = HarnessSession(workdir=tmp_path_factory.mktemp("harness"))
    request.config.stash[_SESSION_KEY] = session
    return session


@pytest.fixture(scope="session")
def kube_control_plane(harness: HarnessSession) -> Generator[KubeControlPlane]:
    """The processes behind ``kube``: for tests that stop or restart the apiserver."""
    plane = KubeControlPlane(
        apiserver=tool("kube-apiserver"), etcd=tool("etcd"), workdir=harness.workdir / "kube", ports=harness.ports
    )
    harness.components["kube"] = plane.processes  # filled in as they start
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kube(kube_control_plane: KubeControlPlane) -> KubeCluster:
    return kube_control_plane.cluster


@pytest.fixture(scope="session")
def kubectl(harness: HarnessSession, kube: KubeCluster) -> Kubectl:
    return Kubectl(tool("kubectl"), kube.kubeconfig, harness.workdir / "kubectl-cache")


@pytest.fixture(scope="session")
def helm(harness: HarnessSession, kube: KubeCluster) -> Helm:
    return Helm(tool("helm"), kube.kubeconfig, harness.workdir / "helm")


@pytest.fixture(scope="session")
def helm_offline(harness: HarnessSession) -> Helm:
    """helm for ``template``/``lint``/``package``: no cluster is started."""
    return Helm(tool("helm"), harness.workdir / "no-cluster.kubeconfig", harness.workdir / "helm")


@pytest.fixture(scope="session")
def jaeger(harness: HarnessSession) -> Generator[JaegerServer]:
    proc = JaegerProcess(binary=tool("jaeger"), workdir=harness.workdir / "jaeger", ports=harness.ports)
    harness.components["jaeger"] = proc.processes  # filled in as they start
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def redis(harness: HarnessSession) -> Generator[RedisServer]:
    proc = RedisProcess(
        binary=tool("redis-server"), cli=tool("redis-cli"), workdir=harness.workdir / "redis", ports=harness.ports
    )
    harness.components["redis"] = proc.processes  # filled in as they start
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture
def own_redis_password() -> str | None:
    """The password `own_redis` requires: none, unless a module overrides this fixture."""
    return None


@pytest.fixture
def own_redis(harness: HarnessSession, tmp_path: Path, own_redis_password: str | None) -> Generator[RestartableRedis]:
    """A Redis only this test talks to, which it may kill or pause and start again."""
    server = RestartableRedis(
        binary=tool("redis-server"),
        cli=tool("redis-cli"),
        workdir=tmp_path / "redis",
        port=harness.ports.take(),
        password=own_redis_password,
    )
    server.start()
    yield server
    server.stop()


NODE_TOOLS = ("kube-apiserver", "etcd", "kubelet", "kube-controller-manager", "kube-scheduler",
              "kube-proxy", "coredns", "containerd", "ctr")  # fmt: skip


@pytest.fixture(scope="session")
def node(harness: HarnessSession) -> Generator[NodeCluster]:
    """A one-node cluster that runs real pods (started once per session)."""
    if os.geteuid() != 0:
        pytest.fail("the test node needs root (containerd, a bridge, iptables)", pytrace=False)
    tools = {name: tool(name) for name in NODE_TOOLS}
    kube_node = KubeNode(
        tools=tools, images_dir=TOOLS_BIN.parent / "images", workdir=harness.workdir / "node", ports=harness.ports
    )
    harness.components["node"] = kube_node.processes  # filled in as they start
    try:
        yield kube_node.start()
    finally:
        kube_node.stop()


@pytest.fixture(scope="session")
def node_kubectl(harness: HarnessSession, node: NodeCluster) -> Kubectl:
    return Kubectl(tool("kubectl"), node.kubeconfig, harness.workdir / "node-kubectl-cache")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the log tails of the components a failed test used to its report."""
    report = yield
    session = item.config.stash.get(_SESSION_KEY, None)
    if not report.failed or session is None:
        return report
    used = set(getattr(item, "fixturenames", ()))  # includes indirect fixtures
    titles = {title for title, _ in report.sections}
    for component, processes in session.components.items():
        if _FIXTURE_OF.get(component, component) not in used:
            continue
        for proc in processes:
            state = "running" if proc.alive() else f"EXITED with {proc.proc.returncode}"
            title = f"harness {proc.name} ({state}; full log {proc.log_path})"
            if title not in titles:  # several conftests may import this hook
                report.sections.append((title, proc.log_tail(LOG_TAIL_LINES)))
    return report
