"""A real Redis (Debian's redis-server) on a free loopback port, nothing on disk; and one a test
may kill, pause and start again on the same port (`RestartableRedis`, with a password if given)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
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
    password: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def cli(self, *args: str) -> str:
        """Run ``redis-cli -h host -p port ARGS`` (authenticated with the password, if any); its stdout, stripped."""
        auth = ["--no-auth-warning", "-a", self.password] if self.password else []
        res = subprocess.run(
            [str(self.cli_binary), "-h", self.host, "-p", str(self.port), *auth, *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return res.stdout.strip()


def ping(host: str, port: int, password: str | None = None) -> bool:
    """PING over a raw socket (the inline command form of the Redis protocol), after AUTH if a password is given."""
    with socket.create_connection((host, port), timeout=2) as s:
        if password is None:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
        s.sendall(f"AUTH {password}\r\nPING\r\n".encode())
        time.sleep(0.05)  # both answers, in one read
        return b"+PONG" in s.recv(256)


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


class RestartableRedis:
    """A redis-server of one test's own that can be killed, paused and started again on the same port
    (with nothing on disk, a restart starts empty, as a Redis without persistence does); with `password`,
    it requires it (`url` and `server.cli` carry it)."""

    def __init__(self, *, binary: Path, cli: Path, workdir: Path, port: int, password: str | None = None) -> None:
        self._binary, self._cli = binary, cli
        self.workdir, self.port, self.password = workdir, port, password
        self.process: ManagedProcess | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def server(self) -> RedisServer:
        return RedisServer("127.0.0.1", self.port, self._cli, self.password)

    def cli(self, *args: str) -> str:
        return self.server.cli(*args)

    def start(self) -> None:
        argv: list[str | Path] = [self._binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no", "--logfile", ""]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password]
        self.process = ManagedProcess("redis-server", argv, self.workdir / "redis.log")
        self.process.wait_ready(lambda: ping("127.0.0.1", self.port, self.password), timeout=READY_TIMEOUT)

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.proc.pid, signal.SIGKILL)
        self.process.proc.wait(10)
        self.process.stop()

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.proc.pid, signum)

    def stop(self) -> None:
        if self.process is not None:
            if self.process.alive():
                self.signal(signal.SIGCONT)  # a paused server takes no SIGTERM
            self.process.stop()
