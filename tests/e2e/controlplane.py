"""What the control-plane end-to-end tests share: a controller process, pod-bound tokens, sidecars."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.integration.sidecar import REPO, SidecarProcess, free_port


def wait_until(predicate: Callable[[], Any], *, timeout: float = 20, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


class ControllerProcess:
    """`python -m controller --source kube`; `start()` again reuses its port, so sidecars reconnect."""

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        *,
        name: str = "controller",
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}-{self.port}.log"
        self.admin_port = free_port()  # not the fixed 15014: replicas share this machine
        self._argv = [
            sys.executable,
            "-m",
            "controller",
            "--source",
            "kube",
            "--kubeconfig",
            str(kubeconfig),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--admin-listen",
            f"127.0.0.1:{self.admin_port}",
            "--log-level",
            "debug",
            *extra_args,
        ]
        self._env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ControllerProcess:
        self._proc = subprocess.Popen(
            self._argv, stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT, env=self._env, cwd=REPO
        )
        proc = self._proc
        wait_until(
            lambda: "serving sidecar streams" in self.logs() or proc.poll() is not None, what=f"{self.name} start"
        )
        assert proc.poll() is None, self.logs()
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)
            self._proc.wait(15)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def pod_token(kubectl: Any, namespace: str, name: str, service_account: str = "app") -> str:
    """A Pod object (no kubelet runs it) and a token bound to it, for audience `modelway`."""
    kubectl.apply(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": service_account}}, "-n", namespace
    )
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "serviceAccountName": service_account,
                "containers": [{"name": "app", "image": "example.invalid/app:1"}],
            },
        },
        "-n",
        namespace,
    )
    uid = kubectl.json("get", "pod", name, "-n", namespace)["metadata"]["uid"]
    return kubectl(
        "create",
        "token",
        service_account,
        "-n",
        namespace,
        "--audience",
        "modelway",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        name,
        "--bound-object-uid",
        uid,
        "--duration",
        "1h",
    ).stdout.strip()


def controller_sidecar(
    controller: ControllerProcess, token: str, workdir: Path, name: str, *, extra_args: Sequence[str] = ()
) -> SidecarProcess:
    token_file = workdir / f"{name}.token"
    token_file.write_text(token)
    return SidecarProcess(
        source_args=[
            "--controller",
            controller.url,
            "--token-file",
            str(token_file),
            "--state-file",
            str(workdir / f"{name}.snapshot.json"),
            "--reconnect-max-seconds",
            "1",
        ],
        extra_args=list(extra_args),
    )
