"""helm install -> the controller (with the chart's ServiceAccount) -> pods injected -> helm upgrade -> helm uninstall.

Real kube-apiserver, real helm and kubectl. No kubelet runs pods, so the
chart's Deployment never starts: the controller runs here as a process with
the Deployment's own arguments, the inject ConfigMap's content as its file
(what the kubelet would mount), and a token of the chart's ServiceAccount, so
every API call it makes is checked against the chart's RBAC. The webhook is
served from this machine (`injection.url`), with the certificate the
controller made for itself; the API server verifies it with the caBundle the
controller wrote into the MutatingWebhookConfiguration.

The steps share one release and run in file order.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.controlplane import ControllerProcess, wait_until
from tests.harness.cli import Helm, Kubectl
from tests.integration.sidecar import REPO, SidecarProcess, free_port

pytestmark = pytest.mark.e2e

CHART = REPO / "charts" / "modelway"
NS = "modelway-system"
ON, OFF = "inject-on", "inject-off"
HOOK = "modelway-sidecar-injector"
RELEASE_OBJECTS = [
    "deployment/modelway-controller",
    "service/modelway-controller",
    "serviceaccount/modelway-controller",
    "role/modelway-controller",
    "rolebinding/modelway-controller",
    "configmap/modelway-inject",
    "secret/modelway-certs",
    "poddisruptionbudget/modelway-controller",
]
CLUSTER_OBJECTS = [
    "clusterrole/modelway-controller",
    "clusterrolebinding/modelway-controller",
    f"mutatingwebhookconfiguration/{HOOK}",
]


class Release:
    def __init__(self, helm: Helm, kubectl: Kubectl, kube: Any, workdir: Path) -> None:
        self.helm, self.kubectl, self.kube, self.workdir = helm, kubectl, kube, workdir
        self.webhook_port = free_port()
        self.sets = [f"injection.url=https://127.0.0.1:{self.webhook_port}"]
        self.controller: ControllerProcess | None = None

    def helm_values(self, *more: str) -> list[str]:
        return [a for s in (*self.sets, *more) for a in ("--set", s)]

    def sa_kubeconfig(self) -> Path:
        token = self.kubectl("create", "token", "modelway-controller", "-n", NS, "--duration", "2h").stdout.strip()
        path = self.workdir / "controller-sa.kubeconfig"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "sa",
                    "clusters": [
                        {
                            "name": "test",
                            "cluster": {"server": self.kube.server, "certificate-authority": str(self.kube.ca.cert)},
                        }
                    ],
                    "users": [{"name": "sa", "user": {"token": token}}],
                    "contexts": [{"name": "sa", "context": {"cluster": "test", "user": "sa", "namespace": NS}}],
                }
            )
        )
        return path

    def start_controller(self) -> ControllerProcess:
        """As the chart's Deployment would run it: its args, its mounted config, its ServiceAccount."""
        deploy = self.kubectl.json("get", "deployment", "modelway-controller", "-n", NS)
        args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
        config = self.workdir / "sidecar.yaml"
        config.write_text(self.kubectl.json("get", "configmap", "modelway-inject", "-n", NS)["data"]["sidecar.yaml"])
        local = ("--source", "--listen", "--log-level", "--webhook-listen", "--inject-config", "--admin-listen")
        extra = [a for a in args if not a.startswith(local)]
        extra += [
            f"--webhook-listen=127.0.0.1:{self.webhook_port}",
            f"--inject-config={config}",
            "--cert-extra-host=127.0.0.1",
        ]
        helptext = subprocess.run(
            [sys.executable, "-m", "controller", "--help"], capture_output=True, text=True, cwd=REPO
        ).stdout
        if "--admin-listen" in helptext:  # the admin server's fixed port would clash on a shared machine
            extra.append(f"--admin-listen=127.0.0.1:{free_port()}")
        controller = ControllerProcess(
            self.sa_kubeconfig(),
            self.workdir,
            name="chart-controller",
            extra_args=extra,
            env={"POD_NAMESPACE": NS, "POD_NAME": "modelway-controller-0"},
        )
        self.controller = controller.start()
        wait_until(lambda: "serving the injection webhook" in controller.logs(), what="webhook serving")
        return controller

    def ca_bundle(self) -> str:
        (hook,) = self.kubectl.json("get", "mutatingwebhookconfiguration", HOOK)["webhooks"]
        return base64.b64decode(hook["clientConfig"].get("caBundle", "")).decode()

    def cert_secret(self) -> dict[str, str]:
        data = self.kubectl.json("get", "secret", "modelway-certs", "-n", NS).get("data") or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}


@pytest.fixture(scope="module")
def release(helm: Helm, kubectl: Kubectl, kube: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    rel = Release(helm, kubectl, kube, tmp_path_factory.mktemp("chart"))
    helm("install", "modelway", str(CHART), "--namespace", NS, "--create-namespace", *rel.helm_values())
    for name, labels in ((ON, {"modelway.io/inject": "enabled"}), (OFF, {})):
        kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    kubectl.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app"}}, "-n", ON)
    try:
        yield rel
    finally:
        if rel.controller is not None:
            rel.controller.stop()
        helm("uninstall", "modelway", "--namespace", NS, check=False)


def app_pod(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    image: str = "example.invalid/app:1",
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}, "annotations": annotations or {}},
        "spec": {
            "serviceAccountName": "app",
            "containers": [{"name": "app", "image": image, "env": [{"name": "OPENAI_API_KEY", "value": "app-own"}]}],
        },
    }


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def sidecars(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in pod["spec"].get("initContainers", []) if c["name"] == "modelway-proxy"]


def test_install_and_the_controller_takes_charge_of_its_certificates(release: Release) -> None:
    helm_status = release.helm.json("status", "modelway", "-n", NS)
    assert helm_status["info"]["status"] == "deployed"
    assert "modelway.io/inject=enabled" in helm_status["info"]["notes"]
    for crd in ("modelroutes.modelway.io", "modelproviders.modelway.io"):
        release.kubectl("get", "crd", crd)
    assert release.ca_bundle() == ""  # nothing trusted yet: the controller has not run
    release.start_controller()
    secret = wait_until(lambda: release.cert_secret() or None, what="the controller's certificate Secret")
    assert set(secret) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    wait_until(lambda: release.ca_bundle() == secret["ca.crt"], what="caBundle equal to the controller's CA")


def test_a_pod_in_an_opted_in_namespace_gets_the_sidecar(release: Release) -> None:
    release.kubectl.apply(app_pod("web"), "-n", ON)
    pod = release.kubectl.json("get", "pod", "web", "-n", ON)
    (sidecar,) = sidecars(pod)
    assert pod["spec"]["initContainers"][0] is not None and sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == "ghcr.io/modelway/modelway:0.1.0"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["startupProbe"]["httpGet"]["port"] == 15020
    assert sidecar["securityContext"]["runAsNonRoot"] is True
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    assert sidecar["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert sidecar["resources"]["limits"]["memory"] == "256Mi"
    args = sidecar["args"]
    assert args[args.index("--controller") + 1] == f"https://modelway-controller.{NS}.svc:15012"
    assert "--max-in-flight-per-backend=256" in args and "--queue-wait=2" in args  # sidecar.backpressure
    env = env_of(sidecar)
    assert env["MODELWAY_CA_PEM"] == release.cert_secret()["ca.crt"]
    assert env["POD_NAME"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    token = next(s for s in volumes["modelway-token"]["projected"]["sources"] if "serviceAccountToken" in s)
    assert token["serviceAccountToken"]["audience"] == "modelway"
    assert "emptyDir" in volumes["modelway-state"]
    app_env = env_of(pod["spec"]["containers"][0])
    assert app_env["OPENAI_BASE_URL"] == "http://127.0.0.1:15000/v1"
    assert app_env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:15000"
    assert app_env["OPENAI_API_KEY"] == "app-own"  # the app's own value is kept
    assert app_env["ANTHROPIC_API_KEY"]  # a placeholder: the SDK refuses to start without one
    assert pod["metadata"]["annotations"]["modelway.io/injected"] == "true"


def test_other_pods_are_untouched(release: Release) -> None:
    release.kubectl.apply(app_pod("plain"), "-n", OFF)
    release.kubectl.apply(app_pod("opted-out-label", labels={"modelway.io/inject": "false"}), "-n", ON)
    release.kubectl.apply(app_pod("opted-out-note", annotations={"modelway.io/inject": "false"}), "-n", ON)
    # The controller's own namespace, even when labelled.
    release.kubectl("label", "namespace", NS, "modelway.io/inject=enabled", "--overwrite")
    own = app_pod("own")
    own["spec"].pop("serviceAccountName")
    release.kubectl.apply(own, "-n", NS)
    release.kubectl("label", "namespace", NS, "modelway.io/inject-")
    for namespace, name in ((OFF, "plain"), (ON, "opted-out-label"), (ON, "opted-out-note"), (NS, "own")):
        pod = release.kubectl.json("get", "pod", name, "-n", namespace)
        assert "initContainers" not in pod["spec"], name
        assert "modelway.io/injected" not in (pod["metadata"].get("annotations") or {}), name
        assert "OPENAI_BASE_URL" not in env_of(pod["spec"]["containers"][0]), name
    release.kubectl("delete", "pod", "own", "-n", NS, "--wait=false")


def test_never_injected_twice(release: Release) -> None:
    release.kubectl.apply(app_pod("web"), "-n", ON)  # re-apply: an update, the pod keeps one sidecar
    assert len(sidecars(release.kubectl.json("get", "pod", "web", "-n", ON))) == 1
    # A pod made from an injected pod's spec (as `kubectl get -o yaml | edit | create` does) gets no second one.
    copy = release.kubectl.json("get", "pod", "web", "-n", ON)
    copy["metadata"] = {"name": "web-copy", "annotations": copy["metadata"]["annotations"]}
    copy.pop("status", None)
    release.kubectl.apply(copy, "-n", ON)
    pod = release.kubectl.json("get", "pod", "web-copy", "-n", ON)
    assert len(sidecars(pod)) == 1
    assert [e["name"] for e in pod["spec"]["containers"][0]["env"]].count("OPENAI_BASE_URL") == 1


def test_the_examples_work_and_the_injected_ca_verifies_the_controller(release: Release) -> None:
    examples = REPO / "examples" / "k8s"
    release.kubectl("apply", "-n", ON, "-f", str(examples))
    # No ReplicaSet controller here: create the demo Deployment's pod as it would.
    template = release.kubectl.json("get", "deployment", "demo-app", "-n", ON)["spec"]["template"]
    release.kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "demo-app-1", **template["metadata"]},
            "spec": {**template["spec"], "serviceAccountName": "app"},
        },
        "-n",
        ON,
    )
    demo = release.kubectl.json("get", "pod", "demo-app-1", "-n", ON)
    assert len(sidecars(demo)) == 1
    assert env_of(demo["spec"]["containers"][0])["OPENAI_BASE_URL"] == "http://127.0.0.1:15000/v1"

    # The leader writes status with the chart's RBAC.
    def accepted() -> bool:
        route = release.kubectl.json("get", "modelroute", "chat", "-n", ON)
        return any(
            c["type"] == "Accepted" and c["status"] == "True" for c in route.get("status", {}).get("conditions", [])
        )

    wait_until(accepted, timeout=30, what="route chat Accepted by the controller")
    # A sidecar given what the webhook gave the pod (the CA as an env var, a pod-bound token) gets its snapshot.
    uid = demo["metadata"]["uid"]
    token = release.kubectl(
        "create",
        "token",
        "app",
        "-n",
        ON,
        "--audience",
        "modelway",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "demo-app-1",
        "--bound-object-uid",
        uid,
    ).stdout.strip()
    token_file = release.workdir / "demo.token"
    token_file.write_text(token)
    assert release.controller is not None
    source = [
        "--controller",
        f"https://127.0.0.1:{release.controller.port}",
        "--token-file",
        str(token_file),
        "--reconnect-max-seconds",
        "1",
    ]
    untrusting = SidecarProcess(source_args=source, env={"MODELWAY_CA_PEM": ""})
    untrusting.start_process()
    try:
        wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in untrusting.logs(), what="TLS refused without the CA")
    finally:
        untrusting.stop()
    injected_ca = env_of(sidecars(demo)[0])["MODELWAY_CA_PEM"]
    with SidecarProcess(source_args=source, env={"MODELWAY_CA_PEM": injected_ca}) as trusting:
        assert "connected to controller" in trusting.logs()  # start() returned: /readyz, a snapshot is live
    assert " 403 " not in release.controller.logs(), "the chart's RBAC refused a call the controller makes"


def test_upgrade_with_changed_values(release: Release) -> None:
    ca_before, secret_before = release.ca_bundle(), release.cert_secret()
    checksum = lambda: release.kubectl.json("get", "deployment", "modelway-controller", "-n", NS)[  # noqa: E731
        "spec"
    ]["template"]["metadata"]["annotations"]["checksum/inject-config"]
    old_checksum = checksum()
    release.helm(
        "upgrade",
        "modelway",
        str(CHART),
        "--namespace",
        NS,
        *release.helm_values("sidecar.image.tag=2.0.0", "sidecar.resources.limits.memory=300Mi"),
    )
    # What the controller made is kept across the upgrade (no manifest sets it).
    assert release.ca_bundle() == ca_before
    assert release.cert_secret() == secret_before
    assert checksum() != old_checksum  # a real rollout restarts the controller with the new settings
    assert release.controller is not None
    release.controller.stop()
    release.start_controller()
    release.kubectl.apply(app_pod("web-2"), "-n", ON)
    (sidecar,) = sidecars(release.kubectl.json("get", "pod", "web-2", "-n", ON))
    assert sidecar["image"] == "ghcr.io/modelway/modelway:2.0.0"
    assert sidecar["resources"]["limits"]["memory"] == "300Mi"
    assert release.cert_secret() == secret_before  # the restarted controller reuses its certificate


def test_uninstall_leaves_only_the_crds(release: Release) -> None:
    assert release.controller is not None
    release.controller.stop()  # as the Deployment's pods would go
    release.helm("uninstall", "modelway", "--namespace", NS)
    for obj in RELEASE_OBJECTS:
        gone = release.kubectl("get", obj, "-n", NS, "--ignore-not-found", "-o", "name").stdout.strip()
        assert gone == "", f"{obj} left behind"
    for obj in CLUSTER_OBJECTS:
        assert release.kubectl("get", obj, "--ignore-not-found", "-o", "name").stdout.strip() == "", obj
    left = release.kubectl(
        "get", "all,secrets,configmaps,serviceaccounts,roles,rolebindings", "-n", NS, "-o", "name"
    ).stdout.split()
    assert left == [], left
    release.kubectl("get", "crd", "modelroutes.modelway.io")  # CRDs stay, as Helm promises
    # Pods in opted-in namespaces no longer wait on a webhook that is gone.
    release.kubectl.apply(app_pod("after"), "-n", ON)
    assert "initContainers" not in release.kubectl.json("get", "pod", "after", "-n", ON)["spec"]
