"""Run one fake provider as a process.

    python -m tests.fakes --provider openai|anthropic|gemini|bedrock|vertex --port N [--api-key KEY]

The first line on stdout is ``listening on http://127.0.0.1:PORT`` (flushed), so
a parent that asked for port 0 learns the port.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from .server import DEFAULT_KEYS, PROVIDERS, Provider, build_app, serve


async def run(provider: Provider, host: str, port: int, api_key: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(build_app(provider, api_key), host, port) as serving:
        print(f"listening on http://{host}:{serving.port}", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes", description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=PROVIDERS, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", help="the key clients must send (default: a per-provider test key)")
    args = parser.parse_args()
    asyncio.run(run(args.provider, args.host, args.port, args.api_key or DEFAULT_KEYS[args.provider]))


if __name__ == "__main__":
    main()
