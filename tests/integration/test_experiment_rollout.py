"""A canary rollout end to end: a real sidecar splits traffic between a steady control and a
failing candidate, reports its counts to an in-process controller, whose runner rolls the canary
back on the guardrail breach; the sidecar then sends everything to the control, and the leader's
status writer puts RolledBack in the route's status with an ExperimentRolledBack Event."""

from __future__ import annotations

import asyncio
import copy
import re
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from controller.api import parse_resource
from controller.kube.errors import KubeApiError
from controller.status_writer import StatusWriter
from tests.integration.test_experiments import KEY, _chat, _objects, _served, _sidecar, _start_stack, _stop, _wait

CANARY = {
    "kind": "ModelRoute",
    "metadata": {"name": "chat", "namespace": "team-a", "generation": 1, "uid": "uid-chat"},
    "spec": {
        "model": "chat",
        "rules": [
            {
                "retry": {"attempts": 1, "retryOn": []},  # a failure is the arm's, not retried away
                "experiment": {
                    "arms": [
                        {"name": "steady", "backends": [{"provider": "claude", "model": "claude-sonnet-4-5"}]},
                        {"name": "canary", "backends": [{"provider": "openai", "model": "gpt-4o"}]},
                    ],
                    "minimumDetectableEffect": 0.1,
                    "minimumSample": 30,
                    "guardrails": [{"metric": "errorRate", "margin": 0.05}],
                    "rollout": {"steps": [50, 100], "pause": "1h"},
                },
            }
        ],
    },
}


@dataclass
class RecordingClient:
    """The API server as the status writer sees it: the route's status and the Events it was sent."""

    status: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    async def get(self, rt: Any, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        if name != "chat":
            raise KubeApiError(404, "NotFound", "gone")
        return {"metadata": {"name": name, "uid": "uid-chat"}, "status": copy.deepcopy(self.status)}

    async def patch_status(self, rt: Any, name: str, status: dict[str, Any], **kw: Any) -> dict[str, Any]:
        self.status = copy.deepcopy(status)
        return {}

    async def create_event(self, **kw: Any) -> dict[str, Any]:
        self.events.append(kw)
        return {}


def _experiment_requests(admin_url: str) -> dict[tuple[str, str], float]:
    """The sidecar's modelway.experiment.requests, per (arm, outcome), as Prometheus scrapes them."""
    with urllib.request.urlopen(admin_url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[tuple[str, str], float] = {}
    for labels, value in re.findall(r"^modelway_experiment_requests_total\{([^}]*)\} (\S+)$", text, re.M):
        found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        assert found["modelway_experiment"].startswith("team-a/chat/default@")
        key = (found["modelway_arm"], found["modelway_outcome"])
        out[key] = out.get(key, 0.0) + float(value)
    return out


@dataclass
class Leader:
    is_leader: bool = True
    identity: str = "controller-0"

    def add_listener(self, callback: Any) -> None:
        pass


async def test_a_failing_canary_is_rolled_back_and_the_control_takes_all_traffic(
    tmp_path, fake_openai, fake_anthropic
) -> None:
    fake_openai.script([{"status": 500} if i % 5 in (0, 3) else {} for i in range(600)])  # 40% fail
    objects = [*_objects(fake_openai.base_url, fake_anthropic.base_url)[:3], parse_resource(CANARY)]
    stack = await _start_stack(objects)
    client = RecordingClient()
    writer = StatusWriter(client, stack.controller, elector=Leader(), experiments=stack.experiments)  # type: ignore[arg-type]
    sidecar = _sidecar(stack.url, tmp_path)
    try:
        await asyncio.to_thread(sidecar.start_process)
        await _wait(lambda: sidecar.admin("/readyz")[0] == 200)
        stack.experiments.tick()
        assert stack.experiments.statuses()[KEY][0] == "RollingOut canary=50%"
        await writer.write_pass()
        assert client.status["experiments"][0]["rollout"]["share"] == 50
        async with aiohttp.ClientSession() as session:
            for _ in range(10):
                await asyncio.gather(*(_chat(session, sidecar.base_url) for _ in range(20)))
            await _wait(lambda: _served(stack) == 200)
            stack.experiments.tick()  # the pause is an hour: only a breach moves it now
            by_arm = _experiment_requests(sidecar.admin_url)
            assert sum(by_arm.values()) == 200
            assert by_arm[("canary", "error")] > 20 and ("steady", "error") not in by_arm

            summary, (entry,) = stack.experiments.statuses()[KEY]
            assert summary == "RolledBack canary"
            assert entry["guardrail"]["arm"] == "canary"
            assert [a["share"] for a in entry["arms"]] == [1.0, 0.0]
            await writer.write_pass()
            assert client.status["experiment"] == "RolledBack canary"
            assert client.status["experiments"][0]["state"] == "RolledBack"
            assert client.status["experiments"][0]["rolledBack"] is True
            rolled_back = [e for e in client.events if e["reason"] == "ExperimentRolledBack"]
            assert len(rolled_back) == 1 and rolled_back[0]["type"] == "Warning"
            assert "all traffic back to arm steady" in rolled_back[0]["note"]
            await writer.write_pass()
            assert len([e for e in client.events if e["reason"] == "ExperimentRolledBack"]) == 1  # once

            # The sidecar gets the new split in its next snapshot: the canary's provider sees no more traffic.
            async def all_to_the_control() -> bool:
                before = len(fake_openai.requests())
                answers = await asyncio.gather(*(_chat(session, sidecar.base_url) for _ in range(20)))
                return all(status == 200 for status, _ in answers) and len(fake_openai.requests()) == before

            for _ in range(100):
                if await all_to_the_control():
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the sidecar kept sending traffic to the rolled-back canary")
    finally:
        sidecar.stop()
        await _stop(stack)
