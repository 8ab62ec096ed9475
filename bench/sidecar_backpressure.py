"""What the in-flight bounds cost the sidecar: the same sidecar with its default bounds (on) and
with them off (`--max-in-flight-per-backend=0 --max-in-flight-per-route=0`), under wrk, in the
same run (part of `make bench`, after the access log comparison). Neither bound bites here (16
connections at most): this is the price every request pays for being counted.

Two figures: wrk's (requests/s, p50 at 1 connection, the proxy's CPU time per request; the
median of `rounds` runs, the order alternating), noisy on a shared machine; and the bounds' own
calls timed in process (a route's and a backend's slot taken and given back, as one request
does), which the noise cannot hide.

    python -m bench.sidecar_backpressure [--duration 10] [--quick] [--rounds 3]
"""

from __future__ import annotations

import sys
import tempfile
import timeit
from pathlib import Path
from typing import Any

from bench.ab import (
    Scenario,
    Variant,
    ab_main,
    measure,
    on_off_table,
    start_fakes,
    stopping,
    telemetry_on,
    without_otel,
    write_report,
    wrk_scripts,
)
from bench.harness import ROOT, Proc, WrkResult

LOGS = ROOT / "bench" / "results" / "logs" / "backpressure"
SCENARIOS = (Scenario("plain@1", False, 1), Scenario("stream@16", True, 16))
VARIANTS = {"off": ["--max-in-flight-per-backend=0", "--max-in-flight-per-route=0"], "on": []}


def bounds_ns_per_request(repeat: int = 5, number: int = 200_000) -> dict[str, float]:
    """Nanoseconds per request for the bounds' calls on the request path, on and off (best of `repeat`)."""
    from proxy.request.backpressure import Backpressure, BackpressureSettings

    def one_request(pressure: Backpressure) -> Any:
        route, backend = pressure.route, pressure.backend

        def request() -> None:
            route_slot = route.enter("bench")
            backend_slot = backend.enter("bench-upstream/bench-upstream-model")
            assert route_slot is not None and backend_slot is not None
            backend.leave(backend_slot)
            route.leave(route_slot)

        return request

    def nothing() -> None:  # the call itself, for scale
        pass

    on = one_request(Backpressure(BackpressureSettings()))
    off = one_request(Backpressure(BackpressureSettings(max_in_flight_per_backend=0, max_in_flight_per_route=0)))
    return {
        name: 1e9 * min(timeit.repeat(call, repeat=repeat, number=number)) / number
        for name, call in (("on", on), ("off", off), ("empty", nothing))
    }


def _line(round_: int, variant: Variant, scenario: Scenario, result: WrkResult) -> str:
    return (
        f"  round {round_ + 1} bounds {variant.name:<3} {scenario.name:<9} {result.rps:>8,.0f} req/s "
        f"p50 {result.p50_ms:.3f} ms {result.proxy_cpu_us_per_request:>5.0f} us/req  "
        f"(others on its core {result.proxy_core_other_pct:.0f}%)"
    )


def run_backpressure(
    *,
    duration: float,
    warmup: float,
    rounds: int,
    proxy_core: int | None,
    load_core: int | None,
    python: str = sys.executable,
) -> dict[str, Any]:
    procs: list[Proc] = []
    with stopping(procs), tempfile.TemporaryDirectory(prefix="modelway-bench-backpressure-") as tmp:
        tmpdir = Path(tmp)
        scripts = wrk_scripts(tmpdir)
        base_env = without_otel()
        snapshot, sink_port = start_fakes(procs, tmpdir, python=python, core=load_core, logs=LOGS, env=base_env)
        env = telemetry_on(base_env, sink_port)
        variants = [
            Variant(name, f"sidecar-bounds-{name}", snapshot, flags=["--access-log=off", *flags], env=env)
            for name, flags in VARIANTS.items()
        ]
        measure(variants, procs, SCENARIOS, scripts, logs=LOGS, warmup=warmup, warmup_connections=16, rounds=rounds,
                seconds=duration, proxy_core=proxy_core, load_core=load_core, line=_line, python=python)  # fmt: skip
    return _report(variants, in_process=bounds_ns_per_request(), duration=duration, rounds=rounds)


def _report(variants: list[Variant], *, in_process: dict[str, float], duration: float, rounds: int) -> dict[str, Any]:
    print()
    print(f"In-flight bounds cost: median of {rounds} runs x {duration:g} s, telemetry on, access log off")
    rows = on_off_table(variants, SCENARIOS, p50=True)
    print(
        f"in process, a route's and a backend's slot taken and given back: {in_process['on']:.0f} ns per request "
        f"with the bounds on, {in_process['off']:.0f} ns off ({in_process['empty']:.0f} ns: an empty function call)"
    )
    report = {
        "duration_seconds": duration,
        "rounds": rounds,
        "scenarios": rows,
        "in_process_ns_per_request": in_process,
    }
    return write_report("sidecar_backpressure", report)


def main(argv: list[str] | None = None) -> int:
    return ab_main("python -m bench.sidecar_backpressure", __doc__ or "", run_backpressure, argv)


if __name__ == "__main__":
    sys.exit(main())
