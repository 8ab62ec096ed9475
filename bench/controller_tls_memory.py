"""RSS per sidecar stream when the streams are on TLS (wss, as the chart serves them).

    python -m bench.controller_tls_memory [--streams 500]

`python -m bench.controller` connects its clients without TLS, so it does not see what each
TLS connection costs the controller's process. Here an aiohttp server with the controller's
stream settings (no heartbeat, 1 MiB messages) serves `--streams` wss connections from a
child process, and the server's RSS growth per connection is printed, once with asyncio's
default TLS read buffer (256 KiB, zero-filled at once) and once with the controller's
(controller.__main__.use_small_tls_read_buffers). Each case runs in a fresh process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.controller_processes import ROOT
from tests.harness.certs import CertAuthority


def _rss() -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024  # type: ignore[union-attr]


async def _serve(streams: int, certs: Path) -> float:
    async def stream(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/v1/stream", stream)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs / "controller.crt", certs / "controller.key")
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    port = runner.addresses[0][1]
    before = _rss()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.controller_tls_memory", "--connect", str(port), "--streams", str(streams),
        "--certs", str(certs), stdout=subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert child.stdout is not None
    await child.stdout.readline()  # all connected
    await asyncio.sleep(1.0)
    grown = _rss() - before
    child.kill()
    await child.wait()
    await runner.cleanup()
    return grown / streams


async def _connect(port: int, streams: int, certs: Path) -> None:
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=0)) as session:
        _open = [await session.ws_connect(f"https://127.0.0.1:{port}/v1/stream") for _ in range(streams)]
        print("connected", flush=True)
        await asyncio.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.controller_tls_memory")
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--small", action="store_true", help=argparse.SUPPRESS)  # one case, in this process
    parser.add_argument("--connect", type=int, help=argparse.SUPPRESS)  # the clients' side
    parser.add_argument("--certs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.connect:
        asyncio.run(_connect(args.connect, args.streams, args.certs))
        return 0
    if args.certs:
        if args.small:
            from controller.__main__ import use_small_tls_read_buffers

            use_small_tls_read_buffers()
        print(f"{asyncio.run(_serve(args.streams, args.certs)):.0f}")
        return 0
    with tempfile.TemporaryDirectory(prefix="modelway-bench-tls-") as tmp:
        ca = CertAuthority(Path(tmp))
        ca.issue("controller", common_name="modelway-controller", hosts=("127.0.0.1",), server=True)
        print(f"{args.streams} wss sidecar streams, server RSS growth per stream:")
        for label, extra in (("asyncio's default TLS read buffer", []), ("the controller's", ["--small"])):
            argv_ = [sys.executable, "-m", "bench.controller_tls_memory", "--streams", str(args.streams)]
            out = subprocess.run(
                [*argv_, "--certs", tmp, *extra], capture_output=True, text=True, check=True, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip
            per_stream = int(out.stdout.split()[-1])
            print(f"  {label:<36} {per_stream / 1000:6.1f} KB  ({per_stream * 5000 / 1e6:5.0f} MB at 5,000 sidecars)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
