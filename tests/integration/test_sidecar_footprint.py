"""What the sidecar process loads as it runs in a pod: every module is memory that each
injected pod pays, so the default configuration (rules from the controller, tracing and
metrics on, no limits) must not import what it never uses: the YAML loader of --snapshot files,
the OpenTelemetry SDK, its stock exporters and protobuf runtime, gRPC, the Redis client of
shared limits, the controller, and pydantic (the controller's API models; the sidecar validates
its snapshot with msgspec)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.fakes.server import DEFAULT_KEYS
from tests.integration.sidecar import REPO, SidecarProcess, free_port
from tests.integration.test_redaction_sidecar import EMAIL, received, redaction_snapshot

# Loaded only where used: --snapshot (YAML), MODELWAY_TRACER=sdk or the gRPC protocol (the SDK,
# the stock exporters, protobuf, grpc), limits kept in Redis (redis); never by the sidecar (the
# controller's own modules, and pydantic, which only they use).
HEAVY = (
    "yaml",
    "opentelemetry.sdk",
    "opentelemetry.exporter",
    "opentelemetry.proto",
    "opentelemetry.semconv",
    "google.protobuf",
    "grpc",
    "requests",
    "redis",
    "controller",
    "cryptography",
    "pydantic",
    "pydantic_core",
    # the translators of provider types the snapshot does not name, and the XML parser of AWS STS
    "proxy.providers.bedrock",
    "proxy.providers.bedrock_anthropic",
    "proxy.providers.vertex",
    "xml",
)

# The code of policy features, loaded by the snapshots that use them, when they are built: the
# personal-data detector (detectPersonalData), the guardrail checks and client, and the limits'
# counters, rules, limiter and gate (limits, budgets or provider capacity).
GUARDRAIL_CODE = (
    "proxy.guardrails.client",
    "proxy.guardrails.texts",
    "proxy.guardrails.window",
    "proxy.request.guarded",
)
LIMITS_CODE = ("proxy.request.gate", "proxy.limits.gate", "proxy.limits.model", "proxy.limits.slot")
SNAPSHOT_FEATURES = (
    "proxy.policy.personal_data",
    *GUARDRAIL_CODE,
    "proxy.limits.model",
    "proxy.limits.algorithm",
    "proxy.limits.gate",
    "proxy.limits.headers",
    "proxy.limits.slot",
    "proxy.limits.status",
    "proxy.request.gate",
)

# The real entry point, with the modules it holds written out as it exits.
RUN_AND_LIST = (
    "import atexit, json, runpy, sys\n"
    "out = sys.argv[1]\n"
    "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted(sys.modules))))\n"
    "sys.argv = ['modelway-proxy', *sys.argv[2:]]\n"
    "runpy.run_module('proxy', run_name='__main__', alter_sys=True)\n"
)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _chat(base: str, *, stream: bool) -> tuple[int, bytes]:
    body = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    request = urllib.request.Request(
        base + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return response.status, response.read()


def test_the_default_sidecar_imports_none_of_the_heavy_modules_it_does_not_use(
    tmp_path: Path, snapshot_data: dict[str, Any]
) -> None:
    state = tmp_path / "state.json"  # rules as a sidecar keeps them between restarts
    state.write_text(json.dumps({"receivedAt": time.time(), "snapshot": snapshot_data}))
    (tmp_path / "token").write_text("not-a-real-token")
    modules = tmp_path / "modules.json"
    port, admin, nowhere = free_port(), free_port(), free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{nowhere}",  # tracing and metric export on
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "500",  # the collector is away: a short flush at exit
    }
    args = ["--controller", f"https://127.0.0.1:{nowhere}", "--token-file", str(tmp_path / "token")]
    args += ["--state-file", str(state), "--port", str(port), "--admin-port", str(admin)]
    log = (tmp_path / "sidecar.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_AND_LIST, str(modules), *args], cwd=REPO, env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 30
        while _get(f"http://127.0.0.1:{admin}/readyz")[0] != 200:
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "sidecar.log").read_text()
            time.sleep(0.1)
        base = f"http://127.0.0.1:{port}"
        assert _chat(base, stream=False)[0] == 200
        status, streamed = _chat(base, stream=True)
        assert status == 200 and streamed.rstrip().endswith(b"data: [DONE]")
        assert b"modelway_requests_total" in _get(f"http://127.0.0.1:{admin}/metrics")[1]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    loaded = json.loads(modules.read_text())
    assert "proxy.telemetry.tracing" in loaded and "proxy.telemetry.otlp_export" in loaded  # telemetry was on
    heavy = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert not heavy, f"the sidecar loaded modules it does not use (each pod pays their memory): {heavy}"
    unused = [m for m in loaded if m in SNAPSHOT_FEATURES]
    assert not unused, f"loaded without a snapshot that uses them: {unused}"


# Imported only when the snapshot or the pod's environment asks for them: the OAuth clients (Entra ID,
# Google) of providers that use them, the AWS pod identity clients (IRSA, EKS Pod Identity) and request
# signing (Bedrock), and the masking code of policies that redact.
ON_DEMAND = (
    "proxy.auth.entra",
    "proxy.auth.google",
    "proxy.auth.oauth",
    "proxy.auth.web_identity",
    "proxy.auth.eks_pod_identity",
    "proxy.auth.aws_credentials",
    "proxy.auth.sigv4",
    "proxy.redaction.rule",
    "proxy.redaction.pseudonymize",
    "proxy.redaction.restore",
)


def _listing(process: SidecarProcess, modules: Path) -> SidecarProcess:
    """`process`, run by the real entry point that writes the modules it held as it exits."""
    process._args = [sys.executable, "-c", RUN_AND_LIST, str(modules), *process._args[3:]]
    return process


def _masking_chat(process: SidecarProcess) -> str:
    answer = process.openai_client().chat.completions.create(
        model="masked", messages=[{"role": "user", "content": f"write to {EMAIL}"}]
    )
    return answer.choices[0].message.content or ""


def test_a_snapshot_that_needs_no_token_identity_or_masking_loads_none_of_their_code(
    tmp_path: Path, fake_openai_process: Any, fake_openai: Any
) -> None:
    plain = redaction_snapshot(fake_openai_process.base_url)
    plain["policy"]["redactedBackends"] = []
    modules = tmp_path / "modules.json"
    with _listing(SidecarProcess(plain), modules) as process:
        assert _masking_chat(process) == f"echo: write to {EMAIL}"
        (sent,) = received(fake_openai)
        assert EMAIL in sent["json"]["messages"][-1]["content"]  # no policy masks it
    loaded = set(json.loads(modules.read_text()))
    assert not loaded & set(ON_DEMAND), f"loaded without a snapshot that needs it: {sorted(loaded & set(ON_DEMAND))}"


def test_a_redaction_policy_pushed_at_runtime_masks_with_the_code_it_loads_then(
    tmp_path: Path, fake_openai_process: Any, fake_openai: Any
) -> None:
    masked = redaction_snapshot(fake_openai_process.base_url)
    plain = {**masked, "policy": {**masked["policy"], "redactedBackends": []}}
    modules = tmp_path / "modules.json"
    with _listing(SidecarProcess(plain), modules) as process:
        before = process.wait_for_version(lambda version: True)["version"]
        process.write_snapshot(masked)
        process.wait_for_version(lambda version: version != before)
        assert _masking_chat(process) == f"echo: write to {EMAIL}"  # the app gets its value back
        (sent,) = received(fake_openai)
        assert sent["json"]["messages"][-1]["content"] == "write to <EMAIL_1>"  # the provider a placeholder
    loaded = set(json.loads(modules.read_text()))
    assert {"proxy.redaction.rule", "proxy.redaction.pseudonymize", "proxy.redaction.restore"} <= loaded


# Builds the runtime of the snapshot in argv[1] (JSON) in a fresh interpreter and prints which of the
# modules named after it were loaded before and after.
BUILD_AND_LIST = (
    "import json, sys\n"
    "from proxy.request.flow import RequestPath\n"  # the request path, as the sidecar imports it
    "from proxy.runtime import Runtime\n"
    "from proxy.snapshot.wire import parse_snapshot\n"
    "snapshot = parse_snapshot(json.loads(sys.argv[1]))\n"
    "before = [m for m in sys.argv[2:] if m in sys.modules]\n"
    "Runtime.build(snapshot)\n"
    "print(json.dumps({'before': before, 'after': [m for m in sys.argv[2:] if m in sys.modules]}))\n"
)


def _feature_modules_around_build(
    snapshot: dict[str, Any], modules: tuple[str, ...] = SNAPSHOT_FEATURES
) -> dict[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", BUILD_AND_LIST, json.dumps(snapshot), *modules],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, list[str]] = json.loads(done.stdout)
    return result


def test_a_snapshot_with_limits_loads_the_limits_code_when_it_is_built_not_at_its_first_request() -> None:
    from tests.integration.limits_sidecar import limit, limited_snapshot

    plain = limited_snapshot("http://127.0.0.1:9", "http://127.0.0.1:9")
    assert _feature_modules_around_build(plain) == {"before": [], "after": []}
    limited = limited_snapshot("http://127.0.0.1:9", "http://127.0.0.1:9", limits=[limit("rpm", requestsPerMinute=1)])
    loaded = _feature_modules_around_build(limited)
    assert loaded["before"] == []
    assert set(LIMITS_CODE) <= set(loaded["after"])
    assert not set(GUARDRAIL_CODE) & set(loaded["after"])


def test_a_snapshot_with_guardrails_loads_their_checks_when_it_is_built_not_at_its_first_request() -> None:
    from tests.integration.test_guardrails_sidecar import guardrail_snapshot

    loaded = _feature_modules_around_build(guardrail_snapshot("http://127.0.0.1:9", "http://127.0.0.1:9"))
    assert loaded["before"] == []
    assert set(GUARDRAIL_CODE) <= set(loaded["after"])
    assert not set(LIMITS_CODE) & set(loaded["after"])


# The code of Anthropic backends (their translator, and the reader of their answers and events, also
# the pass-through's): loaded by a snapshot that names one, as it is built; not by a sidecar whose
# backends all speak OpenAI's API.
ANTHROPIC_BACKEND_CODE = (
    "proxy.providers.anthropic",
    "proxy.providers.anthropic_answer",
    "proxy.providers.anthropic_events",
)


def _openai_only(openai_url: str) -> dict[str, Any]:
    provider = {"name": "oai", "type": "openai", "baseUrl": openai_url + "/v1", "apiKey": DEFAULT_KEYS["openai"]}
    backends = [{"provider": "oai", "model": "gpt-4o"}]
    return {
        "providers": [provider],
        "routes": [{"name": "gpt", "model": "gpt", "rules": [{"name": "default", "backends": backends}]}],
    }


def _with_claude(snapshot: dict[str, Any], anthropic_url: str) -> dict[str, Any]:
    claude = {"name": "claude", "type": "anthropic", "baseUrl": anthropic_url, "apiKey": DEFAULT_KEYS["anthropic"]}
    backends = [{"provider": "claude", "model": "claude-sonnet-4-5"}]
    route = {"name": "claude", "model": "claude", "rules": [{"name": "default", "backends": backends}]}
    return {**snapshot, "providers": [*snapshot["providers"], claude], "routes": [*snapshot["routes"], route]}


def test_a_snapshot_with_an_anthropic_backend_loads_its_code_when_it_is_built_and_only_then() -> None:
    plain = _openai_only("http://127.0.0.1:9")
    assert _feature_modules_around_build(plain, ANTHROPIC_BACKEND_CODE) == {"before": [], "after": []}
    loaded = _feature_modules_around_build(_with_claude(plain, "http://127.0.0.1:9"), ANTHROPIC_BACKEND_CODE)
    assert loaded == {"before": [], "after": list(ANTHROPIC_BACKEND_CODE)}


def test_an_openai_only_sidecar_serves_without_anthropic_backend_code_and_loads_it_for_a_pushed_anthropic_backend(
    tmp_path: Path, fake_openai_process: Any, fake_anthropic_process: Any
) -> None:
    plain = _openai_only(fake_openai_process.base_url)
    question: Any = [{"role": "user", "content": "one two three"}]
    modules = tmp_path / "plain.json"
    with _listing(SidecarProcess(plain), modules) as process:
        answer = process.openai_client().chat.completions.create(model="gpt", messages=question)
        assert answer.choices[0].message.content == "echo: one two three"
        with process.anthropic_client().messages.stream(model="gpt", max_tokens=100, messages=question) as stream:
            assert "".join(stream.text_stream) == "echo: one two three"  # an Anthropic app, translated to OpenAI
    loaded = set(json.loads(modules.read_text()))
    assert not loaded & set(ANTHROPIC_BACKEND_CODE), sorted(loaded & set(ANTHROPIC_BACKEND_CODE))

    modules = tmp_path / "pushed.json"
    with _listing(SidecarProcess(plain), modules) as process:
        before = process.wait_for_version(lambda version: True)["version"]
        process.write_snapshot(_with_claude(plain, fake_anthropic_process.base_url))
        process.wait_for_version(lambda version: version != before)
        claude = process.anthropic_client()
        with claude.messages.stream(model="claude", max_tokens=100, messages=question) as stream:  # the pass-through
            assert "".join(stream.text_stream) == "echo: one two three"
            assert stream.get_final_message().model == "claude-sonnet-4-5"
    assert set(ANTHROPIC_BACKEND_CODE) <= set(json.loads(modules.read_text()))
