"""Leader election and status writing against the real kube-apiserver of the harness."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.compile import Workload
from controller.core import Compiled, Controller, Sidecar
from controller.kube import KubeClient, KubeConnectionError
from controller.kube.resources import MODEL_PROVIDERS, MODEL_ROUTES
from controller.leader import LeaseElector, micro_time, parse_time
from controller.sources.kube import KubeSource
from controller.status_writer import ObservedStatuses, StatusWriter
from controller.store import ResourceStore
from tests.e2e.status_support import REPO, apply, conditions, eventually, provider, route, secret, stop
from tests.harness.cli import Kubectl
from tests.harness.kube import KubeCluster

pytestmark = pytest.mark.e2e


def fast_elector(client: KubeClient, namespace: str, identity: str, *, skew: float = 0.0) -> LeaseElector:
    """Short times so tests see expiry quickly (production: 15 s lease, renew every 5 s, retry every 2 s).
    `skew`: seconds this replica's wall clock is off."""
    return LeaseElector(
        client,
        namespace=namespace,
        identity=identity,
        lease_duration=3.0,
        renew_every=0.5,
        retry_every=0.2,
        wall_clock=lambda: datetime.now(UTC) + timedelta(seconds=skew),
    )


# --- leader election --------------------------------------------------------------------------


async def test_exactly_one_leads_and_hands_over(client: KubeClient, namespace: str) -> None:
    a = fast_elector(client, namespace, "a")
    b = fast_elector(client, namespace, "b")
    tasks = {a: asyncio.create_task(a.run()), b: asyncio.create_task(b.run())}
    try:
        await eventually(lambda: a.is_leader or b.is_leader, what="a leader")
        for _ in range(30):  # 1.5 s, three renewals: never two leaders, never none
            assert a.is_leader != b.is_leader
            await asyncio.sleep(0.05)
        leader, follower = (a, b) if a.is_leader else (b, a)
        lease = await client.get_lease("modelway-controller", namespace=namespace) or {}
        assert lease["spec"]["holderIdentity"] == leader.identity
        assert lease["spec"]["leaseDurationSeconds"] == 3
        transitions = lease["spec"].get("leaseTransitions", 0)

        # A clean stop releases the Lease: the follower takes over at its next retry, not at expiry.
        stopped_at = time.monotonic()
        await stop(tasks.pop(leader))
        assert not leader.is_leader
        await eventually(lambda: follower.is_leader, timeout=5, what="hand-over")
        assert time.monotonic() - stopped_at < 1.0
        lease = await client.get_lease("modelway-controller", namespace=namespace) or {}
        assert lease["spec"]["holderIdentity"] == follower.identity
        assert lease["spec"]["leaseTransitions"] == transitions + 1
    finally:
        for task in tasks.values():
            await stop(task)


async def test_a_killed_leader_is_replaced_when_its_lease_expires(client: KubeClient, namespace: str) -> None:
    a = fast_elector(client, namespace, "a")
    a_task = asyncio.create_task(a.run())
    await eventually(lambda: a.is_leader, what="a leads")
    b = fast_elector(client, namespace, "b")
    b_task = asyncio.create_task(b.run())
    try:
        await asyncio.sleep(0.5)
        assert a.is_leader and not b.is_leader

        async def vanish() -> None:  # killed: no chance to release
            return None

        a.release = vanish  # type: ignore[method-assign]
        killed_at = time.monotonic()
        await stop(a_task)
        await eventually(lambda: b.is_leader, timeout=6, what="take-over after expiry")
        waited = time.monotonic() - killed_at
        # The Lease was renewed at most renew_every before the kill and lasts 3 s.
        assert 2.2 < waited < 4.5, waited
    finally:
        await stop(a_task)
        await stop(b_task)


async def sample_leaders(electors: list[LeaseElector], seconds: float) -> list[tuple[float, list[str]]]:
    """Who calls itself leader, every 20 ms; never two at once."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        leaders = [e.identity for e in electors if e.is_leader]
        assert len(leaders) <= 1, f"two leaders: {leaders}"
        samples.append((time.monotonic(), leaders))
        await asyncio.sleep(0.02)
    return samples


@pytest.mark.parametrize("first_skew", [3600.0, -3600.0], ids=["leader-ahead", "leader-behind"])
async def test_clocks_an_hour_apart_give_one_leader_and_a_failover(
    client: KubeClient, namespace: str, first_skew: float
) -> None:
    first = fast_elector(client, namespace, "first", skew=first_skew)
    second = fast_elector(client, namespace, "second", skew=-first_skew)  # two hours from the first
    first_task = asyncio.create_task(first.run())
    await eventually(lambda: first.is_leader, what="first leads")
    second_task = asyncio.create_task(second.run())
    try:
        samples = await sample_leaders([first, second], 4.0)  # eight renewals, and the second's retries
        assert all(leaders == ["first"] for _, leaders in samples)
        lease = await client.get_lease("modelway-controller", namespace=namespace) or {}
        renewed = parse_time(lease["spec"]["renewTime"]) or datetime.now(UTC)
        assert abs((renewed - datetime.now(UTC)).total_seconds() - first_skew) < 60  # the server has skewed times

        async def vanish() -> None:  # killed: no release, the Lease must expire
            return None

        first.release = vanish  # type: ignore[method-assign]
        killed_at = time.monotonic()
        await stop(first_task)
        samples = await sample_leaders([first, second], 5.0)
        took_over = next(t for t, leaders in samples if leaders == ["second"])
        # The Lease was renewed at most renew_every (0.5 s) before the kill and lasts 3 s.
        assert 2.2 < took_over - killed_at < 3.8, took_over - killed_at
        assert all(leaders == ["second"] for t, leaders in samples if t >= took_over)
        lease = await client.get_lease("modelway-controller", namespace=namespace) or {}
        assert lease["spec"]["holderIdentity"] == "second"
    finally:
        await stop(first_task)
        await stop(second_task)


async def test_a_lease_held_elsewhere_is_respected(client: KubeClient, namespace: str) -> None:
    now = micro_time(datetime.now(UTC))
    await client.create_lease(
        "modelway-controller",
        namespace=namespace,
        spec={"holderIdentity": "elsewhere", "leaseDurationSeconds": 3600, "renewTime": now, "acquireTime": now},
    )
    a = fast_elector(client, namespace, "a")
    task = asyncio.create_task(a.run())
    try:
        await asyncio.sleep(1.0)
        assert not a.is_leader
    finally:
        await stop(task)
    lease = await client.get_lease("modelway-controller", namespace=namespace) or {}
    assert lease["spec"]["holderIdentity"] == "elsewhere"  # and a non-holder's release leaves it alone


# --- status -----------------------------------------------------------------------------------


class Stack:
    """What the controller runs in kube mode, in this process and scoped to one namespace."""

    def __init__(self, client: KubeClient, namespace: str, identity: str) -> None:
        self.store = ResourceStore()
        self.elector = fast_elector(client, namespace, identity)
        self.statuses = ObservedStatuses()
        self.controller = Controller(store=self.store, quiet_seconds=0.05)
        self.writer = StatusWriter(client, self.controller, elector=self.elector, statuses=self.statuses)
        self.source = KubeSource(client, namespaces=[namespace], statuses=self.statuses)
        self.tasks: list[asyncio.Task[Any]] = []

    async def __aenter__(self) -> Stack:
        self.tasks = [
            asyncio.create_task(self.source.run(self.store)),
            asyncio.create_task(self.elector.run()),
            asyncio.create_task(self.writer.run()),
            asyncio.create_task(self.controller.run()),
        ]
        await asyncio.wait_for(self.source.wait_synced(), 20)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in reversed(self.tasks):
            await stop(task)


async def test_status_conditions_events_and_columns(client: KubeClient, kubectl: Kubectl, namespace: str) -> None:
    # Someone else holds the Lease: our writer must write nothing.
    now = micro_time(datetime.now(UTC))
    await client.create_lease(
        "modelway-controller",
        namespace=namespace,
        spec={"holderIdentity": "other-replica", "leaseDurationSeconds": 3600, "renewTime": now, "acquireTime": now},
    )
    async with Stack(client, namespace, "replica-a") as stack:
        await apply(kubectl, [secret(namespace), provider("openai", namespace), route("chat", namespace, "openai")])
        key = ("ModelRoute", namespace, "chat")
        await eventually(lambda: key in stack.controller.judgement.routes, what="route judged")
        await asyncio.sleep(1.0)  # several write passes' worth
        assert not stack.elector.is_leader
        assert "status" not in await client.get(MODEL_ROUTES, "chat", namespace=namespace)
        assert stack.writer.passes == 0

        # The other replica goes away (its Lease is deleted): we lead and write.
        await asyncio.to_thread(kubectl, "delete", "lease", "modelway-controller", "-n", namespace)
        await eventually(lambda: stack.elector.is_leader, timeout=5, what="leadership")
        chat: dict[str, Any] = {}

        async def chat_programmed() -> bool:
            chat.update(await client.get(MODEL_ROUTES, "chat", namespace=namespace))
            return conditions(chat).get("Programmed", {}).get("status") == "True"

        await poll(chat_programmed, what="chat Programmed")
        got = conditions(chat)
        assert {t: (c["status"], c["reason"]) for t, c in got.items()} == {
            "Accepted": ("True", "Accepted"),
            "ResolvedRefs": ("True", "ResolvedRefs"),
            "Programmed": ("True", "Programmed"),
        }
        assert got["Programmed"]["message"].startswith("0/0 sidecars run generation 1")
        assert all(c["observedGeneration"] == 1 for c in got.values())
        assert (
            chat["status"]["observedGeneration"],
            chat["status"]["syncedSidecars"],
            chat["status"]["totalSidecars"],
        ) == (1, 0, 0)
        managers = {m["manager"] for m in chat["metadata"]["managedFields"] if m.get("subresource") == "status"}
        assert managers == {"modelway"}

        async def provider_ok() -> bool:
            obj = await client.get(MODEL_PROVIDERS, "openai", namespace=namespace)
            return [c["status"] for c in conditions(obj).values()] == ["True", "True"]

        await poll(provider_ok, what="provider conditions")

        # A route naming a provider that does not exist.
        await apply(kubectl, route("bad", namespace, "ghost"))
        bad: dict[str, Any] = {}

        async def bad_reported() -> bool:
            bad.update(await client.get(MODEL_ROUTES, "bad", namespace=namespace))
            return "ResolvedRefs" in conditions(bad)

        await poll(bad_reported, what="bad route status")
        refs = conditions(bad)["ResolvedRefs"]
        assert (refs["status"], refs["reason"]) == ("False", "BackendNotFound")
        assert f"ModelProvider {namespace}/ghost not found" in refs["message"]
        assert (conditions(bad)["Programmed"]["status"], conditions(bad)["Programmed"]["reason"]) == (
            "False",
            "Invalid",
        )
        events = await events_about("bad", kubectl, namespace)
        warnings = [e for e in events if e["type"] == "Warning" and e["reason"] == "BackendNotFound"]
        assert len(warnings) == 1 and "ghost" in warnings[0]["note"]
        assert warnings[0]["reportingController"] == "modelway.io/controller"
        assert warnings[0]["reportingInstance"] == "replica-a"

        # kubectl shows the printer columns filled in.
        table = await asyncio.to_thread(kubectl, "get", "mwr", "-n", namespace, "-o", "wide")
        rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()}
        assert rows["NAME"][:7] == ["NAME", "MODEL", "ACCEPTED", "PROGRAMMED", "SYNCED", "SIDECARS", "RESOLVEDREFS"]
        assert rows["chat"][:7] == ["chat", "chat", "True", "True", "0", "0", "True"]
        assert rows["bad"][:7] == ["bad", "bad", "True", "False", "0", "0", "False"]

        # An edit that stays good: new generation, same statuses, times kept, one Normal Event saying it is out.
        await asyncio.sleep(1.1)  # lastTransitionTime has second precision
        chat_events = len(await events_about("chat", kubectl, namespace))
        await apply(kubectl, route("chat", namespace, "openai", model="gpt-4o-mini"))

        async def chat_generation_2() -> bool:
            chat.update(await client.get(MODEL_ROUTES, "chat", namespace=namespace))
            return (chat.get("status") or {}).get("observedGeneration") == 2

        await poll(chat_generation_2, what="generation 2 observed")
        assert {t: (c["lastTransitionTime"], c["observedGeneration"]) for t, c in conditions(chat).items()} == {
            t: (c["lastTransitionTime"], 2) for t, c in got.items()
        }
        assert conditions(chat)["Programmed"]["message"].startswith("0/0 sidecars run generation 2")

        # The missing provider appears: ResolvedRefs turns True, with a Normal Event.
        await apply(kubectl, provider("ghost", namespace))

        async def bad_fixed() -> bool:
            bad.update(await client.get(MODEL_ROUTES, "bad", namespace=namespace))
            return conditions(bad)["ResolvedRefs"]["status"] == "True"

        await poll(bad_fixed, what="bad route fixed")
        events = await events_about("bad", kubectl, namespace)
        assert {(e["type"], e["reason"]) for e in events} >= {("Normal", "ResolvedRefs"), ("Normal", "Programmed")}
        assert len([e for e in events if e["reason"] == "BackendNotFound"]) == 1  # no repeats
        await asyncio.sleep(0.5)
        chat_events_now = await events_about("chat", kubectl, namespace)
        assert len(chat_events_now) == chat_events + 1
        rolled_out = [e for e in chat_events_now if "generation 2" in e["note"]]
        assert [(e["type"], e["reason"]) for e in rolled_out] == [("Normal", "Programmed")]


async def poll(check: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        await asyncio.sleep(0.1)


async def events_about(name: str, kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    listed = await asyncio.to_thread(kubectl.json, "get", "events.events.k8s.io", "-n", namespace)
    return [e for e in listed["items"] if e["regarding"]["name"] == name]


class RecordingStream:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_snapshot(self, compiled: Compiled) -> None:
        self.sent.append(compiled.message)


async def test_programmed_follows_the_sidecars(client: KubeClient, kubectl: Kubectl, namespace: str) -> None:
    async with Stack(client, namespace, "replica-a") as stack:
        await apply(kubectl, [secret(namespace), provider("openai", namespace), route("chat", namespace, "openai")])
        await eventually(
            lambda: stack.elector.is_leader and ("ModelRoute", namespace, "chat") in stack.controller.judgement.routes,
            what="leading, route judged",
        )
        sidecar = Sidecar(name="app-0", workload=Workload(namespace), stream=RecordingStream())
        await stack.controller.attach(sidecar)  # pushed, not yet acknowledged
        chat: dict[str, Any] = {}

        def programmed_is(status: str) -> Callable[[], Any]:
            async def check() -> bool:
                chat.update(await client.get(MODEL_ROUTES, "chat", namespace=namespace))
                return conditions(chat).get("Programmed", {}).get("status") == status

            return check

        await poll(programmed_is("False"), what="Pending")
        assert (conditions(chat)["Programmed"]["reason"], conditions(chat)["Programmed"]["message"]) == (
            "Pending",
            "0/1 sidecars run generation 1",
        )
        assert (chat["status"]["syncedSidecars"], chat["status"]["totalSidecars"]) == (0, 1)

        stack.controller.acknowledge(sidecar, version=sidecar.sent_version, error=None)
        await poll(programmed_is("True"), what="Programmed")
        assert conditions(chat)["Programmed"]["message"] == "1/1 sidecars run generation 1"
        assert (chat["status"]["syncedSidecars"], chat["status"]["totalSidecars"]) == (1, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_controller_process_leads_writes_and_releases(
    kube: KubeCluster, client: KubeClient, kubectl: Kubectl, namespace: str
) -> None:
    argv = [
        sys.executable,
        "-m",
        "controller",
        "--source",
        "kube",
        "--kubeconfig",
        str(kube.kubeconfig),
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--admin-listen",
        f"127.0.0.1:{free_port()}",
        "--lease-namespace",
        namespace,
    ]
    process = subprocess.Popen(
        argv,
        cwd=REPO,
        env={**os.environ, "POD_NAME": "controller-0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        async def leading() -> bool:
            lease = await client.get_lease("modelway-controller", namespace=namespace) or {}
            return str((lease.get("spec") or {}).get("holderIdentity") or "").startswith("controller-0_")

        await poll(leading, timeout=20, what="the controller process leads")
        await apply(kubectl, [secret(namespace), provider("openai", namespace), route("chat", namespace, "openai")])

        async def written() -> bool:
            obj = await client.get(MODEL_ROUTES, "chat", namespace=namespace)
            return conditions(obj).get("Programmed", {}).get("status") == "True"

        await poll(written, what="status written by the process")
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 15)
        lease = await client.get_lease("modelway-controller", namespace=namespace) or {}
        assert "holderIdentity" not in lease["spec"]  # released: a successor need not wait
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate()[0]
    assert process.returncode == 0, output
    assert "is now the leader" in output and "released Lease" in output


class Partitionable:
    """The real client, until `broken`: then every Lease call fails as if the API were unreachable."""

    def __init__(self, client: KubeClient) -> None:
        self._client = client
        self.broken = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.broken:
                raise KubeConnectionError(f"{name}: connection refused (test partition)")
            return await method(*args, **kwargs)

        return call


async def test_a_cut_off_leader_steps_down_before_anyone_takes_over(client: KubeClient, namespace: str) -> None:
    link = Partitionable(client)
    a = fast_elector(link, namespace, "a")  # type: ignore[arg-type]
    a_task = asyncio.create_task(a.run())
    await eventually(lambda: a.is_leader, what="a leads")
    b = fast_elector(client, namespace, "b")
    b_task = asyncio.create_task(b.run())
    try:
        await asyncio.sleep(0.3)
        link.broken = True
        cut_at = time.monotonic()
        await eventually(lambda: not a.is_leader, timeout=4, what="a steps down")
        stepped_down = time.monotonic() - cut_at
        assert not b.is_leader  # a let go before its Lease could expire: never two leaders
        await eventually(lambda: b.is_leader, timeout=6, what="b takes over")
        assert stepped_down < 2.5  # renew_deadline: 2/3 of the Lease's 3 s
    finally:
        await stop(a_task)
        await stop(b_task)
