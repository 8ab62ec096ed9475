"""The sidecar's experiment counts: what a request's end adds, feedback once, reports only when moved."""

from __future__ import annotations

import asyncio
from typing import Any

from controller.api import parse_resource
from controller.core import Controller
from controller.experiments.counts import ArmStats
from controller.store import ResourceStore
from controller.workload import Workload
from proxy.experiments import ExperimentCounts

NAME = "team-a/chat/default@0123abcd"


def _arms(report: dict[str, Any]) -> dict[str, ArmStats]:
    return {arm: ArmStats.from_dict(counts) for arm, counts in report["experiments"][NAME].items()}


def test_answers_and_failures_count_and_the_request_s_own_faults_do_not() -> None:
    counts = ExperimentCounts(sidecar="pod-1", started=100.0)
    assert counts.report() is None  # nothing counted: nothing to send
    counts.count(NAME, "a", status=200, duration=0.5, ttft=0.1, cost=0.002, request_id="r1")
    counts.count(NAME, "a", status=200, duration=1.5, ttft=None, cost=None, request_id="r2")
    counts.count(NAME, "a", status=502, duration=3.0, ttft=None, cost=None, request_id="r3")
    counts.count(NAME, "b", status=400, duration=0.1, ttft=None, cost=None, request_id="r4")  # the app's fault
    counts.count(NAME, "b", status=499, duration=0.1, ttft=None, cost=None, request_id="r5")  # the client left
    report = counts.report()
    assert report is not None and (report["type"], report["sidecar"], report["started"]) == ("counts", "pod-1", 100.0)
    a = _arms(report)["a"]
    assert (a.requests.successes, a.requests.failures) == (2, 1)
    assert (a.latency.count, a.latency.total) == (2, 2.0) and a.time_to_first_token.count == 1 and a.cost.count == 1
    assert "b" not in report["experiments"][NAME] or not _arms(report)["b"].requests.count
    assert counts.report() is None  # unchanged since the last report
    assert counts.report(force=True) == report  # a new connection gets everything again


def test_feedback_counts_once_for_an_answered_request_only() -> None:
    counts = ExperimentCounts(sidecar="pod-1", started=1.0)
    counts.count(NAME, "a", status=200, duration=0.5, ttft=None, cost=None, request_id="ok")
    counts.count(NAME, "a", status=502, duration=0.5, ttft=None, cost=None, request_id="failed")
    assert counts.feedback("ok", 0.9)
    assert not counts.feedback("ok", 0.9)  # once
    assert not counts.feedback("failed", 0.1)  # nothing to score
    assert not counts.feedback("never", 0.1)
    quality = _arms(counts.report() or {})["a"].quality
    assert (quality.count, quality.total) == (1, 0.9)


def test_a_new_adaptive_split_reaches_the_route_s_snapshot() -> None:
    async def run() -> None:
        store = ResourceStore()
        controller = Controller(store=store)
        for obj in (
            {"kind": "ModelProvider", "metadata": {"name": "p", "namespace": "ns"}, "spec": {"type": "openai"}},
            {
                "kind": "ModelRoute",
                "metadata": {"name": "chat", "namespace": "ns"},
                "spec": {
                    "model": "chat",
                    "rules": [
                        {
                            "experiment": {
                                "strategy": "adaptive",
                                "arms": [
                                    {"name": "a", "backends": [{"provider": "p", "model": "a"}]},
                                    {"name": "b", "backends": [{"provider": "p", "model": "b"}]},
                                ],
                                "minimumDetectableEffect": 0.1,
                            }
                        }
                    ],
                },
            },
        ):
            store.apply(parse_resource(obj))
        await controller.recompute()
        workload = Workload(namespace="ns")
        before = controller.compiled_for(workload).snapshot
        assert [a.weight for a in before.routes[0].rules[0].experiment.arms] == [1, 1]  # type: ignore[union-attr]
        controller.set_arm_weights(("ModelRoute", "ns", "chat"), {"default": {"a": 100, "b": 900}})
        await controller.recompute()
        after = controller.compiled_for(workload).snapshot
        assert [a.weight for a in after.routes[0].rules[0].experiment.arms] == [100, 900]  # type: ignore[union-attr]
        assert after.version != before.version
        assert after.routes[0].rules[0].experiment.name == before.routes[0].rules[0].experiment.name  # type: ignore[union-attr]

    asyncio.run(run())
