"""`make demo` works: fakes, `modelway dev`, and every call in its table does what it says."""

from __future__ import annotations

import subprocess
import sys

from tests.integration.sidecar import REPO


def test_demo_runs_and_tells_what_happened():
    result = subprocess.run(
        [sys.executable, "-m", "examples.demo"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split("  ")[0]: line for line in result.stdout.splitlines()}
    assert "claude-sonnet-4-5" in rows["OpenAI fails (503), falls back"]
    assert "HTTP 502" in rows["every backend fails"]
    assert "gemini-2.5-flash" in rows["routes.yaml edited: chat -> Gemini"]
    assert "get_weather" in rows["tool call via Anthropic backend"]
    assert "gpt-4o" in rows["no personal data: OpenAI (US)"]
    assert "my-gpt4o-deployment" in rows["e-mail in the prompt: kept in the EU"]
    assert "HTTP 403" in rows["marked personal, no EU backend: refused"]
