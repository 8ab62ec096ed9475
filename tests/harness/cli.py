"""Thin runners for the kubectl and helm binaries, bound to one cluster.

Tests call ``kubectl("get", "ns")`` or ``helm("install", ...)`` and get the
completed process back; a non-zero exit raises CommandFailed whose message
carries the command, its stdout and its stderr (CalledProcessError's message
shows neither), unless ``check=False`` asks to inspect the failure.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

Manifest = str | Mapping[str, Any] | Sequence[Mapping[str, Any]]


class CommandFailed(subprocess.CalledProcessError):
    def __str__(self) -> str:
        argv = self.cmd if isinstance(self.cmd, str) else " ".join(self.cmd)
        return f"`{argv}` exited with {self.returncode}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


class Cli:
    """Runs ``binary`` with fixed leading args and environment."""

    def __init__(
        self,
        binary: Path,
        *,
        base_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        default_timeout: float = 60.0,
    ) -> None:
        self.binary = binary
        self.base_args = list(base_args)
        self.env = {**os.environ, **(env or {})}
        self.default_timeout = default_timeout

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), *self.base_args, *args]
        res = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            check=False,
            env=self.env,
            timeout=timeout or self.default_timeout,
        )
        if check and res.returncode != 0:
            raise CommandFailed(res.returncode, argv, res.stdout, res.stderr)
        return res

    def json(self, *args: str) -> Any:
        """Run with ``-o json`` and parse stdout."""
        return json.loads(self(*args, "-o", "json").stdout)


def to_yaml(manifest: Manifest) -> str:
    """YAML text of a manifest given as text, one object, or a list of objects."""
    if isinstance(manifest, str):
        return manifest
    if isinstance(manifest, Mapping):
        return yaml.safe_dump(dict(manifest), sort_keys=False)
    return yaml.safe_dump_all([dict(m) for m in manifest], sort_keys=False)


class Kubectl(Cli):
    """kubectl bound to a kubeconfig, with its discovery cache in the session dir."""

    def __init__(self, binary: Path, kubeconfig: Path, cache_dir: Path) -> None:
        super().__init__(
            binary,
            base_args=["--kubeconfig", str(kubeconfig), "--cache-dir", str(cache_dir)],
            env={"KUBECONFIG": str(kubeconfig)},
        )

    def apply(self, manifest: Manifest, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -`` of YAML text or Python objects."""
        return self("apply", "-f", "-", *extra, input=to_yaml(manifest), check=check)


class Helm(Cli):
    """helm bound to a kubeconfig; its config, cache and data dirs are private to
    the session so a developer's own repositories and plugins never leak in."""

    def __init__(self, binary: Path, kubeconfig: Path, home: Path) -> None:
        env = {
            "KUBECONFIG": str(kubeconfig),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        super().__init__(binary, base_args=["--kubeconfig", str(kubeconfig)], env=env, default_timeout=120.0)
