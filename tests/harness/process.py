"""One started component: its process, its log file, readiness and teardown.

Each component logs to its own file in the session's work dir, so a failing
run can show what the component said (fixtures attach the tails to failed
test reports). Waiting for readiness also watches the process: if it exits,
we fail at once with its log instead of waiting out the timeout.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def _die_with_parent(argv: list[str]) -> list[str]:
    """Prefix argv so the component gets SIGTERM when the test process dies, and a
    killed pytest (a CI timeout, kill -9) leaves no etcd/apiserver behind.

    Done with util-linux's `setpriv --pdeathsig` rather than a preexec_fn: a
    preexec_fn makes Python run its at-fork hooks in the child, and the
    OpenTelemetry SDK's hook (any TracerProvider a test made) can deadlock there
    between fork and exec. Linux sends the signal when the *thread* that forked
    exits, so it is only used for processes started from the main thread (one
    started from asyncio.to_thread would otherwise die with its worker thread)."""
    setpriv = shutil.which("setpriv")
    if sys.platform != "linux" or setpriv is None:
        return argv
    return [setpriv, "--pdeathsig", "TERM", "--", *argv]


class ComponentFailed(RuntimeError):
    """A component did not start, or died; the message carries its log tail."""


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(("$ " + shlex.join(self.argv) + "\n").encode())
        self._log.flush()
        on_main_thread = threading.current_thread() is threading.main_thread()
        argv = _die_with_parent(self.argv) if on_main_thread else self.argv
        # A new session: the component gets no terminal signals meant for
        # pytest, and stop() can signal its whole group.
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def wait_ready(self, probe: Callable[[], bool], *, timeout: float, what: str = "ready") -> None:
        """Poll ``probe`` until it returns True; fail fast if the process exits."""
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise ComponentFailed(
                    f"{self.name} exited with code {self.proc.returncode} before "
                    f"it was {what}; log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if probe():
                    return
            except Exception as e:
                last_error = e
            time.sleep(0.2)
        raise ComponentFailed(
            f"{self.name} not {what} after {timeout:.0f}s (last probe error: "
            f"{last_error!r}); log {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL after ``timeout``."""
        try:
            if self.alive():
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout)
        except ProcessLookupError:
            pass
        finally:
            self._log.close()
