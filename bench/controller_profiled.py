"""The controller as `python -m bench.controller --profile` runs it when py-spy is not installed.

`python -m controller` unchanged, plus signal handlers so cProfile covers only the window the
benchmark chooses (the measured changes, or the settling after the sidecars connect) instead of
the whole run: SIGUSR1 starts profiling, SIGUSR2 stops it and writes the stats to
$BENCH_PROFILE_OUT. With $BENCH_TRACEMALLOC set, allocations are traced from the start and
SIGUSR2 also writes the largest live allocation sites next to it (`.mem.txt`).
cProfile sees the event loop's thread only, which is where the controller's work runs.
With $BENCH_GC set, the cyclic collector's passes in the window are timed (gc.callbacks) and
SIGUSR2 writes them per generation (`.gc.txt`): count, total and longest pause.
"""

from __future__ import annotations

import cProfile
import gc
import os
import signal
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import FrameType

OUT = Path(os.environ.get("BENCH_PROFILE_OUT", "controller.prof"))


class GcPauses:
    """The collector's passes per generation while a window is open: [count, seconds, longest]."""

    def __init__(self) -> None:
        self.open = False
        self.passes: dict[int, list[float]] = {}
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        elif self.open:
            took = time.perf_counter() - self._began
            entry = self.passes.setdefault(info["generation"], [0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += took
            entry[2] = max(entry[2], took)

    def text(self) -> str:
        lines = ["generation  passes  total ms  longest ms"]
        for generation, (count, total, longest) in sorted(self.passes.items()):
            lines.append(f"{generation:10d}  {int(count):6d}  {total * 1000:8.1f}  {longest * 1000:10.1f}")
        return "\n".join(lines) + "\n"


class Window:
    def __init__(self, gc_pauses: GcPauses | None = None) -> None:
        self.profile: cProfile.Profile | None = None
        self.gc_pauses = gc_pauses

    def start(self, signum: int, frame: FrameType | None) -> None:
        if self.gc_pauses is not None:
            self.gc_pauses.open, self.gc_pauses.passes = True, {}
        if not os.environ.get("BENCH_NO_CPROFILE"):
            self.profile = cProfile.Profile()
            self.profile.enable()

    def stop(self, signum: int, frame: FrameType | None) -> None:
        """Writes the allocations first, then the profile: each file appears whole (renamed into place)."""
        profile, self.profile = self.profile, None
        if profile is not None:
            profile.disable()
        if self.gc_pauses is not None:
            self.gc_pauses.open = False
            gc_text = self.gc_pauses.text()
            _write(OUT.with_suffix(".gc.txt"), lambda path: path.write_text(gc_text))
        if tracemalloc.is_tracing():
            snapshot = tracemalloc.take_snapshot()
            lines = [f"traced: {tracemalloc.get_traced_memory()[0] / 1e6:.1f} MB live"]
            for kind in ("filename", "lineno"):
                lines.append(f"\nlargest live allocations by {kind}:")
                lines += [f"  {stat}" for stat in snapshot.statistics(kind)[:40]]
            _write(OUT.with_suffix(".mem.txt"), lambda path: path.write_text("\n".join(lines) + "\n"))
        if profile is not None:
            _write(OUT, lambda path: profile.dump_stats(str(path)))


def _write(path: Path, write: Callable[[Path], object]) -> None:
    partial = path.with_name(path.name + ".partial")
    write(partial)
    partial.replace(path)


def main() -> int:
    if os.environ.get("BENCH_TRACEMALLOC"):
        tracemalloc.start(1)
    gc_pauses = GcPauses() if os.environ.get("BENCH_GC") else None
    if gc_pauses is not None:
        gc.callbacks.append(gc_pauses)
    window = Window(gc_pauses)
    signal.signal(signal.SIGUSR1, window.start)
    signal.signal(signal.SIGUSR2, window.stop)
    from controller.__main__ import main as controller_main

    return controller_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
