"""An experiment end to end: a real sidecar splits traffic between two fake providers, counts per
arm, reports to an in-process controller over the stream, and the controller's decision names the
better arm in the route's status. Also the feedback endpoint a quality metric reads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from controller.auth import Identity
from controller.compile import RouteVerdict
from controller.compile_route import experiment_name
from controller.core import Controller, RouteSync
from controller.experiment_runner import ExperimentRunner
from controller.status import render, route_status
from controller.store import ResourceStore
from proxy.experiments import ExperimentCounts
from proxy.runtime import Runtime, RuntimeHolder
from proxy.server import ServerSettings, build_app
from proxy.telemetry.facade import Telemetry
from tests.integration.controller_stack import (
    TOKEN,
    RunningController,
    start_controller,
    stop_controller,
    team_objects,
    wait_until,
)
from tests.integration.sidecar import SidecarProcess

KEY = ("ModelRoute", "team-a", "chat")


def _objects(openai_url: str, anthropic_url: str) -> list[Any]:
    return team_objects(
        openai_url,
        anthropic_url,
        {
            "model": "chat",
            "rules": [
                {
                    "retry": {"attempts": 1, "retryOn": []},  # a failure is the arm's, not retried away
                    "experiment": {
                        "arms": [
                            {"name": "flaky", "backends": [{"provider": "openai", "model": "gpt-4o"}]},
                            {"name": "steady", "backends": [{"provider": "claude", "model": "claude-sonnet-4-5"}]},
                        ],
                        "metric": "errorRate",
                        "minimumDetectableEffect": 0.1,
                        "minimumSample": 30,
                    },
                }
            ],
        },
    )


class Stack:
    def __init__(self, running: RunningController, experiments: ExperimentRunner) -> None:
        self.running, self.experiments = running, experiments
        self.controller, self.url = running.controller, running.url


async def _start_stack(objects: list[Any]) -> Stack:
    def runner_for(controller: Controller) -> ExperimentRunner:
        return ExperimentRunner(
            routes=lambda: {k: v.served for k, v in controller.judgement.routes.items()},
            set_weights=controller.set_arm_weights,
        )

    running = await start_controller(objects, counts=runner_for)
    assert isinstance(running.counts, ExperimentRunner)
    return Stack(running, running.counts)


async def _stop(stack: Stack) -> None:
    await stop_controller(stack.running)


def _sidecar(url: str, tmp_path: Any) -> SidecarProcess:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    return SidecarProcess(
        source_args=["--controller", url, "--token-file", str(token_file), "--reconnect-max-seconds", "1"],
        extra_args=["--experiment-report-seconds", "0.2"],
    )


async def _wait(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    await wait_until(predicate, timeout)


async def _chat(session: aiohttp.ClientSession, base: str, **headers: str) -> tuple[int, str | None]:
    async with session.post(
        base + "/v1/chat/completions",
        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
    ) as resp:
        await resp.read()
        return resp.status, resp.headers.get("x-request-id")


def _name(stack: Stack) -> str:
    route = stack.controller.judgement.routes[KEY].served
    assert route is not None
    return experiment_name("team-a", "chat", route.spec.rules[0])


def _served(stack: Stack) -> int:
    return sum(arm.requests.count for arm in stack.experiments.ledger.totals(_name(stack)).values())


async def test_the_controller_names_the_arm_that_fails_less(tmp_path, fake_openai, fake_anthropic) -> None:
    fake_openai.script([{"status": 500} if i % 10 in (0, 3, 7) else {} for i in range(600)])  # 30% fail
    stack = await _start_stack(_objects(fake_openai.base_url, fake_anthropic.base_url))
    sidecar = _sidecar(stack.url, tmp_path)
    try:
        await asyncio.to_thread(sidecar.start_process)
        await _wait(lambda: sidecar.admin("/readyz")[0] == 200)
        stack.experiments.tick()
        assert stack.experiments.statuses()[KEY][0] == "Running"
        async with aiohttp.ClientSession() as session:
            results = []
            for _ in range(20):
                results += await asyncio.gather(*(_chat(session, sidecar.base_url) for _ in range(20)))
        statuses = [status for status, _ in results]
        assert statuses.count(200) > 300 and set(statuses) <= {200, 502}
        assert all(request_id and len(request_id) == 32 for _, request_id in results)  # every answer, errors too
        await _wait(lambda: _served(stack) == 400)  # the sidecar's totals reached the controller
        assert stack.experiments.tick()
        summary, (entry,) = stack.experiments.statuses()[KEY]
        assert summary == "Winner steady"
        assert entry["winner"] == "steady"
        samples = {arm["name"]: arm["samples"] for arm in entry["arms"]}
        assert sum(samples.values()) == 400 and min(samples.values()) > 150
        (comparison,) = entry["comparisons"]
        assert comparison["high"] < 0 < 0.5 + comparison["low"]  # fewer errors, by about 0.3
        verdict = stack.controller.judgement.routes[KEY]
        assert isinstance(verdict, RouteVerdict)
        body = render(
            route_status(KEY, verdict, RouteSync(synced=1, total=1), experiments=stack.experiments.statuses()[KEY]),
            None,
            "2026-01-01T00:00:00Z",
        )
        assert body["experiment"] == "Winner steady" and body["experiments"][0]["state"] == "Winner"
    finally:
        sidecar.stop()
        await _stop(stack)


async def test_feedback_scores_the_request_s_arm_once(tmp_path, fake_openai, fake_anthropic) -> None:
    stack = await _start_stack(_objects(fake_openai.base_url, fake_anthropic.base_url))
    sidecar = _sidecar(stack.url, tmp_path)
    try:
        await asyncio.to_thread(sidecar.start_process)
        await _wait(lambda: sidecar.admin("/readyz")[0] == 200)
        async with aiohttp.ClientSession() as session:
            status, request_id = await _chat(session, sidecar.base_url)
            assert status == 200 and request_id

            async def feedback(body: Any) -> tuple[int, Any]:
                async with session.post(sidecar.base_url + "/v1/feedback", json=body) as resp:
                    return resp.status, await resp.json()

            for bad, param in (
                ({"request_id": request_id, "score": "great"}, "score"),
                ({"request_id": request_id, "score": float("inf")}, "score"),
                ({"request_id": request_id}, "score"),
                ({"request_id": 7, "score": 1}, "request_id"),
                ([1, 2], None),
            ):
                status, error = await feedback(bad)
                assert status == 400, bad
                assert error["error"]["type"] == "invalid_request_error" and error["error"]["param"] == param
            status, error = await feedback({"request_id": "not-one-of-ours", "score": 1})
            assert status == 404 and error["error"]["code"] == "unknown_request_id"
            assert (await feedback({"request_id": request_id, "score": 0.8}))[0] == 200
            status, error = await feedback({"request_id": request_id, "score": 0.8})  # once per request
            assert status == 404
            async with session.post(sidecar.base_url + "/v1/feedback", data=b"{not json") as resp:
                assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_json"
        stack.experiments.tick()

        def scored() -> bool:
            return sum(a.quality.count for a in stack.experiments.ledger.totals(_name(stack)).values()) == 1

        await _wait(scored)
    finally:
        sidecar.stop()
        await _stop(stack)


async def test_the_server_span_names_the_experiment_and_arm(fake_openai, fake_anthropic) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    snapshot = _objects(fake_openai.base_url, fake_anthropic.base_url)
    store = ResourceStore()
    for obj in snapshot:
        store.apply(obj)
    controller = Controller(store=store)
    await controller.recompute()
    holder = RuntimeHolder()
    holder.swap(
        Runtime.build(controller.compiled_for(Identity(namespace="team-a", service_account="app").workload).snapshot)
    )
    counts = ExperimentCounts(sidecar="in-process", started=1.0)
    app = build_app(
        holder=holder,
        telemetry=Telemetry(tracer=provider.get_tracer("test")),
        settings=ServerSettings(),
        experiments=counts,
    )
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        async with aiohttp.ClientSession() as session:
            status, request_id = await _chat(
                session, f"http://127.0.0.1:{runner.addresses[0][1]}", **{"x-user-id": "alice"}
            )
        assert status == 200 and request_id is not None
        [server] = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
        assert server.attributes is not None
        assert str(server.attributes["modelway.experiment"]).startswith("team-a/chat/default@")
        arm = server.attributes["modelway.arm"]
        assert arm in ("flaky", "steady")
        report = counts.report()
        assert report is not None
        (arms,) = report["experiments"].values()
        assert list(arms) == [arm]
    finally:
        await runner.cleanup()
