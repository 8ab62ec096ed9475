"""Several real sidecar processes on one snapshot file, and what the fake providers served them.

Used by tests/integration/test_limits_fleet.py: the sidecars share their limits' counters through one
Redis, so what they admit together is read back from the fakes' records (the provider's view), not
from the sidecars' own reports.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from proxy.limits.model import Demand
from tests.fakes import anthropic_fake, openai_fake
from tests.fakes.answers import reply_to
from tests.fakes.process import FakeProviderProcess
from tests.fakes.server import DEFAULT_KEYS
from tests.integration.sidecar import SidecarProcess

PRICES = {"gpt-4o": (2.5, 10.0)}  # USD per million tokens (= micro-USD per token), input and output


class Fleet:
    """`count` sidecars reading one snapshot file, each with `extra_args`; started together."""

    def __init__(self, snapshot: dict[str, Any], workdir: Path, *, count: int, extra_args: list[str]) -> None:
        self.snapshot_path = workdir / "snapshot.json"
        self.snapshot_path.write_text(json.dumps(snapshot))
        source = ["--snapshot", str(self.snapshot_path), "--reload-interval", "0.1"]
        self.sidecars = [SidecarProcess(source_args=source, extra_args=extra_args) for _ in range(count)]

    def __enter__(self) -> Fleet:
        with ThreadPoolExecutor(len(self.sidecars)) as pool:
            started = [pool.submit(sidecar.start) for sidecar in self.sidecars]
        try:
            for future in started:
                future.result()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        for sidecar in self.sidecars:
            sidecar.stop()

    def logs(self) -> str:
        return "\n".join(f"--- sidecar {n}:\n{s.logs()[-3000:]}" for n, s in enumerate(self.sidecars))

    def metric(self, name: str, **labels: str) -> float:
        """The sum over every sidecar of the samples of `name` (Prometheus text) whose labels include `labels`."""
        return sum(sidecar.metric(name, **labels) for sidecar in self.sidecars)


def provider(name: str, kind: str, fake: FakeProviderProcess, **extra: Any) -> dict[str, Any]:
    base = fake.base_url + "/v1" if kind == "openai" else fake.base_url
    return {"name": name, "type": kind, "baseUrl": base, "apiKey": DEFAULT_KEYS[fake.provider], **extra}


def route(name: str, provider_name: str, model: str, *, fallback: tuple[str, str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"name": "default", "backends": [{"provider": provider_name, "model": model}]}
    if fallback is not None:
        rule["fallbacks"] = [{"provider": fallback[0], "model": fallback[1]}]
    rule["retry"] = {"attempts": 1}
    return {"name": name, "model": name, "rules": [rule]}


# --- what the providers served ------------------------------------------------------------------


def served(fake: FakeProviderProcess) -> list[tuple[int, int]]:
    """(input tokens, output tokens) of each chat call the fake answered, as its usage reported them."""
    out = []
    for entry in fake.requests():
        body = entry["json"]
        if fake.provider == "openai" and entry["path"].endswith("/chat/completions"):
            reply = reply_to(openai_fake.conversation(body))
        elif fake.provider == "anthropic" and entry["path"] == "/v1/messages":
            reply = reply_to(anthropic_fake.conversation(body))
        else:
            continue
        if body.get("stream") is True:
            assert entry.get("stream_end") == "complete", f"a stream was not served whole: {entry.get('stream_end')}"
        out.append((reply.input_tokens, reply.output_tokens))
    return out


def served_tokens(fake: FakeProviderProcess) -> int:
    return sum(i + o for i, o in served(fake))


def served_micro_usd(fake: FakeProviderProcess, model: str) -> int:
    """What the calls the fake answered cost at `PRICES`, rounded up per call as the limiter charges."""
    price_in, price_out = PRICES[model]
    return sum(Demand(0, 0, price_in, price_out).micro_usd(i, o) for i, o in served(fake))


def pricing() -> dict[str, dict[str, float]]:
    return {m: {"inputPerMillion": i, "outputPerMillion": o} for m, (i, o) in PRICES.items()}
