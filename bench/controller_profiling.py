"""The controller benchmark's profiling windows (`--profile`, `--tracemalloc`, `--gc`).

py-spy samples the controller from outside when it is installed and only the changes are
profiled; otherwise the controller runs as bench/controller_profiled.py, which turns cProfile,
tracemalloc or its collector log on at SIGUSR1 and writes them at SIGUSR2. Each window's files
are kept in bench/results as controller-<window>.prof, .mem.txt and .gc.txt.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from bench.controller_processes import PYTHON
from bench.controller_report import LOGS, print_profile, print_samples
from bench.controller_setup import BenchBroken, say


class Profiler:
    def __init__(self, args: argparse.Namespace, *, results: Path) -> None:
        self.args = args
        self.results = results
        self.py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(PYTHON).parent))
        self.sampler: subprocess.Popen[bytes] | None = None

    def windows(self) -> set[str]:
        """The windows profiled (cProfile) or whose allocations are written (--tracemalloc)."""
        profile = self.args.profile
        if profile is None:
            return {"changes"} if self.args.tracemalloc or self.args.gc else set()
        return {"settle", "changes"} if profile == "all" else {profile}

    def uses_py_spy(self) -> bool:
        return bool(self.py_spy) and self.args.profile == "changes" and not self.args.tracemalloc and not self.args.gc

    def start(self, pid: int, window: str) -> None:
        """py-spy samples the controller from outside if installed; else its own cProfile starts (SIGUSR1)."""
        if window not in self.windows():
            return
        if not self.uses_py_spy():
            os.kill(pid, signal.SIGUSR1)  # bench.controller_profiled
            return
        samples = self.results / "controller-profile.txt"
        samples.unlink(missing_ok=True)
        with (LOGS / "py-spy.log").open("wb") as spy_log:
            argv = [self.py_spy or "py-spy", "record", "--pid", str(pid), "--format", "raw", "--function"]
            argv += ["--nonblocking", "--rate", "250", "--output", str(samples)]
            self.sampler = subprocess.Popen(argv, stdout=spy_log, stderr=subprocess.STDOUT, start_new_session=True)
        time.sleep(1.0)

    def stop(self, pid: int, window: str) -> None:
        """Ends the window; its files are kept as controller-<window>.prof and .mem.txt in bench/results."""
        if window not in self.windows():
            return
        if self.sampler is not None:
            self.sampler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            self.sampler.wait(30)
            return
        profile, memory, gc_file = (self.results / f"controller.{ext}" for ext in ("prof", "mem.txt", "gc.txt"))
        # bench.controller_profiled writes collector pauses, then allocations, then the profile
        last = profile if self.args.profile else memory if self.args.tracemalloc else gc_file
        for path in (profile, memory, gc_file):
            path.unlink(missing_ok=True)
        os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + 120
        while not last.exists():
            if time.monotonic() > deadline:
                raise BenchBroken(f"the profiled controller wrote no {last.name} within 120 s")
            time.sleep(0.2)
        for path in (profile, memory, gc_file):
            if path.exists():
                path.replace(self.results / path.name.replace("controller.", f"controller-{window}.", 1))

    def kill(self) -> None:
        """A sampler still running when the benchmark ends (it broke, or was interrupted)."""
        if self.sampler is not None and self.sampler.poll() is None:
            self.sampler.kill()
            self.sampler.wait(10)

    def print_results(self) -> None:
        if self.sampler is not None:
            print_samples(self.results / "controller-profile.txt")
            return
        for window in sorted(self.windows()):
            if self.args.profile:
                print_profile(self.results / f"controller-{window}.prof")
            if self.args.tracemalloc:
                say(f"allocations after the {window} window: {self.results / f'controller-{window}.mem.txt'}")
            gc_file = self.results / f"controller-{window}.gc.txt"
            if self.args.gc and gc_file.exists():
                say(f"collector passes during the {window} window:\n" + gc_file.read_text())
