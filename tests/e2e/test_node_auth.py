"""Who may do what on the harness's node.

The kubelet lets a caller do only what the apiserver's authorizers grant it
(Webhook authorization): a client cert from the session CA alone gets nothing,
the apiserver's own calls (logs, exec, proxy) get the kubelet API role.
CoreDNS runs as its own ServiceAccount, which may read what it serves and
nothing else.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.harness.certs import CertPair
from tests.harness.cli import Kubectl
from tests.harness.node import NodeCluster
from tests.harness.node_host import NODE_IP
from tests.harness.node_kubelet import COREDNS_ACCOUNT

pytestmark = pytest.mark.e2e

READER = "modelway-test-kubelet-reader"


def _kubelet_status(port: int, path: str, client: CertPair) -> int:
    """The HTTP status of a GET on the kubelet's API as ``client``."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the kubelet's serving cert is its own, self-signed
    ctx.load_cert_chain(str(client.cert), str(client.key))
    try:
        with urllib.request.urlopen(f"https://{NODE_IP}:{port}{path}", context=ctx, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture
def reader_binding(node_kubectl: Kubectl) -> Iterator[None]:
    """RBAC's kubelet API role for the user READER, for one test."""
    name = "modelway-test:kubelet-reader"
    node_kubectl("create", "clusterrolebinding", name, "--clusterrole=system:kubelet-api-admin", f"--user={READER}")
    yield
    node_kubectl("delete", "clusterrolebinding", name, check=False)


def test_kubelet_grants_a_caller_what_rbac_grants_it(
    node: NodeCluster, node_kubectl: Kubectl, reader_binding: None
) -> None:
    kubelet = node_kubectl.json("get", "node", node.node_name)["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
    stranger = node.kube.ca.issue("kubelet-stranger", common_name="modelway-test-stranger", client=True)
    reader = node.kube.ca.issue("kubelet-reader", common_name=READER, client=True)
    # Both are authenticated (the session CA signed them); only the bound one is allowed.
    assert _kubelet_status(kubelet, "/pods", stranger) == 403
    assert _kubelet_status(kubelet, "/pods", reader) == 200
    # The apiserver's own client reaches the kubelet: what `kubectl logs` and exec go through.
    pods = json.loads(node_kubectl("get", "--raw", f"/api/v1/nodes/{node.node_name}/proxy/pods").stdout)
    assert pods["kind"] == "PodList", pods


def test_coredns_runs_as_its_own_account_that_reads_only_what_it_serves(
    node: NodeCluster, node_kubectl: Kubectl
) -> None:
    namespace, name = COREDNS_ACCOUNT
    account = f"system:serviceaccount:{namespace}:{name}"

    def can(verb: str, resource: str) -> bool:
        answer = node_kubectl("auth", "can-i", verb, resource, "--all-namespaces", f"--as={account}", check=False)
        return answer.stdout.strip() == "yes"

    reads = [("list", "services"), ("watch", "services"), ("list", "endpointslices.discovery.k8s.io"),
             ("watch", "endpointslices.discovery.k8s.io"), ("list", "namespaces"), ("watch", "namespaces")]  # fmt: skip
    others = [("get", "secrets"), ("list", "secrets"), ("list", "pods"), ("list", "configmaps"),
              ("create", "services"), ("delete", "endpointslices.discovery.k8s.io"), ("get", "nodes")]  # fmt: skip
    assert [r for r in reads if not can(*r)] == []
    assert [r for r in others if can(*r)] == []
    # CoreDNS was started with a kubeconfig whose token is that account's.
    corefile = (node.workdir / "Corefile").read_text()
    kubeconfig = Path(next(line.split()[1] for line in corefile.splitlines() if line.split()[:1] == ["kubeconfig"]))
    (user,) = yaml.safe_load(kubeconfig.read_text())["users"]
    token = Path(user["user"]["tokenFile"]).read_text().strip()
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
    status, body = node.kube.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", review)
    assert status in (200, 201) and body["status"]["user"]["username"] == account, (status, body)
