"""Experiment counts across controller replicas: each publishes the ledger of the sidecars connected
to it on its replica Lease, and the leader decides on the sum, each sidecar counted once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from controller.experiment_reports import ReportLedger, parse_published
from controller.experiment_runner import ExperimentRunner
from controller.experiments.counts import ProportionStats
from controller.replicas import EXPERIMENTS_ANNOTATION, ReplicaCounts
from tests.unit.test_experiment_runner import KEY, NAME, ROUTE, _report
from tests.unit.test_replicas import FakeController, FakeElector, FakeLeases


def test_a_sidecar_that_moved_between_replicas_counts_once() -> None:
    leader, follower = ReportLedger(), ReportLedger()
    leader.record("team-a/app", _report("pod-1", 1.0, (100, 0), (100, 0)))  # before it moved
    follower.record("team-a/app", _report("pod-1", 1.0, (150, 0), (150, 0)))  # its later totals
    follower.record("team-a/app", _report("pod-2", 1.0, (10, 5), (10, 0)))
    peer = parse_published(follower.published())
    totals = leader.totals(NAME, [peer])
    assert totals["old"].requests == ProportionStats(160, 5)
    assert totals["new"].requests == ProportionStats(160, 0)
    # The other way round too: the leader's copy is the later one.
    assert ReportLedger().totals(NAME, [peer])["old"].requests == ProportionStats(160, 5)


def test_a_ledger_too_big_to_publish_is_folded_and_still_counted() -> None:
    ledger = ReportLedger()
    for pod in range(5):
        ledger.record("team-a/app", _report(f"pod-{pod}", 1.0, (10, 1), (10, 0)))
    text = ledger.published(max_bytes=300)
    assert "reporters" not in text
    assert ReportLedger().totals(NAME, [parse_published(text)])["old"].requests == ProportionStats(50, 5)


def test_a_malformed_published_ledger_is_skipped_not_fatal() -> None:
    good = json.loads(ReportLedger().published() or "{}")
    for text in (None, "not json", "[1]", json.dumps({NAME: {"reporters": [["w", "s"]]}}), json.dumps(good)):
        peer = parse_published(text)
        assert ReportLedger().totals(NAME, [peer]) == {}


def _replica(client: FakeLeases, identity: str, *, leading: bool) -> tuple[ReplicaCounts, ExperimentRunner]:
    counts = ReplicaCounts(
        client,  # type: ignore[arg-type]
        FakeController({}, generation=1),  # type: ignore[arg-type]
        namespace="system",
        identity=identity,
        elector=FakeElector(leading),  # type: ignore[arg-type]
        min_interval=0.05,
        poll_every=0.05,
    )
    runner = ExperimentRunner(routes=lambda: {KEY: ROUTE}, peers=counts.experiment_counts, clock=lambda: 1_000_000.0)
    counts.share_experiments(runner.ledger.published)
    runner.add_record_listener(counts.notify)
    return counts, runner


async def test_the_leader_decides_on_the_counts_its_peers_took() -> None:
    client = FakeLeases()
    leader_counts, leader = _replica(client, "a_1", leading=True)
    follower_counts, follower = _replica(client, "b_2", leading=False)
    tasks = [asyncio.create_task(leader_counts.run()), asyncio.create_task(follower_counts.run())]
    try:
        # Half the sidecars on each replica: neither half alone shows a difference, the sum does.
        leader.record("team-a/app", _report("pod-1", 1.0, (44, 6), (50, 0)))
        follower.record("team-a/app", _report("pod-2", 1.0, (44, 6), (50, 0)))
        leader.tick()
        assert leader.statuses()[KEY][0] == "Running"

        async def decided() -> Any:
            for _ in range(100):
                leader.tick()
                if leader.statuses()[KEY][0] != "Running":
                    return leader.statuses()[KEY]
                await asyncio.sleep(0.02)
            raise AssertionError("the leader never saw the follower's counts")

        summary, (entry,) = await decided()
        assert summary == "Winner new"
        assert {a["name"]: a["samples"] for a in entry["arms"]} == {"old": 100, "new": 100}
        assert EXPERIMENTS_ANNOTATION in client.leases["modelway-replica-b-2"]["metadata"]["annotations"]
        assert follower_counts.experiment_counts() == []  # not leading: nothing polled
        assert leader_counts.sync_counts() == {}  # the route-sync annotation is as it was
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
