"""A real Redis (Debian's redis-server) on a free loopback port, nothing on disk."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .ports import PortAllocator
from .process import ManagedProcess

READY_TIMEOUT = 30.0


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int
    cli_binary: Path  # redis-cli

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def cli(self, *args: str) -> str:
        """Run ``redis-cli -h host -p port ARGS``; its stdout, stripped."""
        res = subprocess.run(
            [str(self.cli_binary), "-h", self.host, "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return res.stdout.strip()


def ping(host: str, port: int) -> bool:
    """PING over a raw socket (the inline command form of the Redis protocol)."""
    with socket.create_connection((host, port), timeout=2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


class RedisProcess:
    def __init__(self, *, binary: Path, cli: Path, workdir: Path, ports: PortAllocator) -> None:
        self._binary = binary
        self._cli = cli
        self.workdir = workdir
        self._ports = ports
        self.processes: list[ManagedProcess] = []

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        port = self._ports.take()
        proc = ManagedProcess(
            "redis-server",
            [
                self._binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                # Not daemonized, logging to stdout (our log file).
                "--daemonize",
                "no",
                "--logfile",
                "",
            ],
            self.workdir / "redis.log",
        )
        self.processes.append(proc)
        proc.wait_ready(lambda: ping("127.0.0.1", port), timeout=READY_TIMEOUT)
        return RedisServer(host="127.0.0.1", port=port, cli_binary=self._cli)

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop()
