"""A provider that echoes the key it was sent: no byte the sidecar emits holds the key.

For each provider type, its error answers repeat the key (whole, masked in the middle, in JSON,
in a text body, in a 400, in a 200 that is not JSON, in a stream's error event before and after
the first content). The real sidecar runs at debug level and exports traces and metrics to a
local OTLP sink; the test reads everything it emitted: the answers to the app, its log, and every
OTLP payload. Also: a malformed OTEL_EXPORTER_OTLP_HEADERS is reported by header name, never by
value, by the sidecar (lean exporter and the stock gRPC one) and by the controller (stock SDK).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.adversarial.hostile import HostileProvider
from tests.adversarial.secrets_helpers import ECHOES, KEYS, echo, leaked_forms, otlp_sink, snapshot, stream_echo
from tests.integration.sidecar import REPO, SidecarProcess, free_port

REDACTED = "[REDACTED]"
STREAMS = {"stream-before-content": False, "stream-mid": True}
# (provider type, echo, inbound API): every echo on the OpenAI API, and a few on the Anthropic one.
CASES = [(kind, name, "openai") for kind in KEYS for name in [*ECHOES, *STREAMS]] + [
    (kind, name, "anthropic") for kind in KEYS for name in ("full", "garbage-200-cut", "stream-mid")
]


@dataclass
class Emitted:
    answers: dict[tuple[str, str, str], tuple[int, bytes]] = field(default_factory=dict)
    log: str = ""
    otlp: list[tuple[str, bytes]] = field(default_factory=list)


def _call(sidecar: SidecarProcess, kind: str, api: str, *, stream: bool) -> tuple[int, bytes]:
    body: dict[str, Any] = {"model": kind, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    path = "/v1/chat/completions"
    if api == "anthropic":
        body["max_tokens"] = 16
        path = "/v1/messages"
    request = urllib.request.Request(
        sidecar.base_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def emitted() -> Iterator[Emitted]:
    """Every case run once against one sidecar; then the sidecar stops (flushing its telemetry)."""
    out = Emitted()
    with HostileProvider() as provider, otlp_sink() as (sink_url, payloads):
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink_url,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
        }
        sidecar = SidecarProcess(snapshot(provider.base_url), extra_args=["--log-level", "debug"], env=env)
        with sidecar:
            for kind, name, api in CASES:
                if name in STREAMS:
                    provider.script(stream_echo(kind, content_first=STREAMS[name]))
                else:
                    provider.script(echo(ECHOES[name]))
                out.answers[(kind, name, api)] = _call(sidecar, kind, api, stream=name in STREAMS)
        out.log = sidecar.logs()
        out.otlp = list(payloads)
    yield out


LEAKS = {kind: leaked_forms(key) for kind, key in KEYS.items()}


def _leaks(data: bytes) -> list[str]:
    return sorted(f"{kind}: {found.group()!r}" for kind, forms in LEAKS.items() if (found := forms.search(data)))


@pytest.mark.parametrize("kind, name, api", CASES, ids=["-".join(case) for case in CASES])
def test_the_app_never_gets_the_key(emitted: Emitted, kind: str, name: str, api: str) -> None:
    status, body = emitted.answers[(kind, name, api)]
    assert not _leaks(body), body
    if name == "stream-mid":  # committed: the stream ends with an error event in the app's API
        assert status == 200 and b"failed mid-stream" in body and REDACTED.encode() in body, body
        return
    error = json.loads(body)
    message = error["error"]["message"]
    if api == "anthropic":
        assert error["type"] == "error"
    assert status == (400 if name == "client-400" else 502), body
    # The provider's words reach the app, the key in them redacted.
    assert REDACTED in message, message
    if name.startswith("garbage"):
        assert "is not JSON" in message


def test_the_log_never_holds_the_key(emitted: Emitted) -> None:
    assert not _leaks(emitted.log.encode()), [line for line in emitted.log.splitlines() if _leaks(line.encode())]
    assert "attempt failed" in emitted.log and "stream cut" in emitted.log  # every failure is logged
    assert REDACTED in emitted.log


def test_traces_and_metrics_never_hold_the_key(emitted: Emitted) -> None:
    traces = b"".join(body for path, body in emitted.otlp if path == "/v1/traces")
    metrics = b"".join(body for path, body in emitted.otlp if path == "/v1/metrics")
    assert traces and metrics
    assert not _leaks(traces) and not _leaks(metrics)
    assert REDACTED.encode() in traces  # the attempts' span statuses carry the provider's words


# --- malformed OTEL_EXPORTER_OTLP_HEADERS ------------------------------------------------------------

# One bad value per variable: a token with an unencoded comma (its tail looks like a stray item),
# an HTTP header line instead of name=value, and a value that decodes to a line break.
BAD_HEADERS = {
    "OTEL_EXPORTER_OTLP_HEADERS": (
        "authorization=Bearer t0k3n,Zq9",
        ["OTEL_EXPORTER_OTLP_HEADERS: item 2 is not name=value", "'authorization'", "%2C"],
    ),
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS": (
        "x-tenant=a,authorization: Bearer t0k3nZq9",
        ["OTEL_EXPORTER_OTLP_METRICS_HEADERS: item 2 is not name=value"],
    ),
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS": (
        "authorization=Bearer%0At0k3nZq9",
        ["OTEL_EXPORTER_OTLP_TRACES_HEADERS: item 1: the value of header 'authorization' holds control characters"],
    ),
}
TOKEN_PARTS = ("t0k3n", "Zq9")
PROGRAMS = {
    "sidecar": (
        ["-m", "proxy", "--snapshot", "{snapshot}", "--port", "{port}", "--admin-port", "{port}"],
        "listening on",
    ),
    "controller": (
        [
            "-m",
            "controller",
            "--source",
            "files",
            "--config-dir",
            "{dir}",
            "--dev-token-file",
            "{dir}/token",
            "--listen",
            "127.0.0.1:{port}",
            "--admin-listen",
            "127.0.0.1:{port}",
        ],
        "serving sidecar streams",
    ),
}


@pytest.mark.parametrize(
    "program, protocol", [("sidecar", "http/protobuf"), ("sidecar", "grpc"), ("controller", "http/protobuf")]
)
def test_a_bad_otlp_header_is_named_never_shown(tmp_path, program: str, protocol: str) -> None:
    """At start-up and as it exports (the stock exporters quote a bad value in their errors)."""
    (tmp_path / "snapshot.json").write_text(json.dumps(snapshot("http://127.0.0.1:9")))
    args, marker = PROGRAMS[program]
    argv = [
        sys.executable,
        *(a.format(snapshot=tmp_path / "snapshot.json", dir=tmp_path, port=free_port()) for a in args),
    ]
    with otlp_sink() as (sink_url, _):
        env = {
            **_env(),
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink_url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            **{variable: value for variable, (value, _) in BAD_HEADERS.items()},
        }
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        lines = []
        try:
            for line in process.stdout:
                lines.append(line)
                if marker in line:
                    break
        finally:
            process.terminate()  # it exports what it has as it stops
            output = "".join(lines) + process.communicate(timeout=20)[0]
    assert marker in output, output
    assert not any(part in output for part in TOKEN_PARTS), output
    for _, expected in BAD_HEADERS.values():
        assert all(e in output for e in expected), output


def _env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}, "PYTHONPATH": str(REPO)}
