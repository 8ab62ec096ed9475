"""`modelway-controller` refuses to run half-served: an admin port it cannot bind is a clear error."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.integration.sidecar import REPO, free_port


def test_a_taken_admin_port_stops_the_controller_with_what_to_do(tmp_path):
    (tmp_path / "config").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "controller",
                "--source",
                "files",
                "--config-dir",
                str(tmp_path / "config"),
                "--dev-token-file",
                str(tmp_path / "token"),
                "--listen",
                f"127.0.0.1:{free_port()}",
                "--admin-listen",
                f"127.0.0.1:{port}",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert f"cannot serve /healthz, /readyz and /metrics on 127.0.0.1:{port}" in result.stderr
    assert "--admin-listen HOST:PORT" in result.stderr
