"""One started component: its process, its log file, readiness and teardown.

Each component logs to its own file in the session's work dir, so a failing
run can show what the component said (fixtures attach the tails to failed
test reports). Waiting for readiness also watches the process: if it exits,
we fail at once with its log instead of waiting out the timeout.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test process dies, so a
    killed pytest (a CI timeout, kill -9) leaves no etcd/apiserver behind.

    Linux sends it when the *thread* that forked exits, so it is only set for
    processes started from the main thread (see ManagedProcess): one started
    from asyncio.to_thread would otherwise die with its worker thread."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


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
        preexec = _die_with_parent if on_main_thread else None
        # A new session: the component gets no terminal signals meant for
        # pytest, and stop() can signal its whole group.
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
            preexec_fn=preexec,  # noqa: PLW1509 - calls prctl only, takes no locks
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def wait_ready(
        self, probe: Callable[[], bool], *, timeout: float, what: str = "ready"
    ) -> None:
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
            except Exception as e:  # noqa: BLE001 - not up yet, keep polling
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
