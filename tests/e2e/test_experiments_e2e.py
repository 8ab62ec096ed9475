"""Experiments end to end: kubectl -> kube-apiserver -> controller process -> sidecar process -> fake providers.

The apps are the official openai SDK calling the sidecar; the providers are fakes with a known, seeded
error rate or latency (tests.fakes.behaviour.Profile). The sidecar counts per arm and reports over its
stream; the controller (deciding every half second here, `--experiment-interval`) writes the decision
to the route's status, where `kubectl get mwr` shows it, and sets the split the sidecar then serves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.controlplane import ControllerProcess, b64, controller_sidecar, pod_token, wait_until
from tests.fakes.process import FakeProviderProcess
from tests.fakes.server import DEFAULT_KEYS
from tests.integration.sidecar import REPO, SidecarProcess

NS = "team-experiments"
NO_RETRY = {"attempts": 1, "retryOn": []}  # a failure is the arm's, not retried away


@pytest.fixture(scope="module")
def providers() -> Iterator[tuple[FakeProviderProcess, FakeProviderProcess]]:
    """Fakes of this module's own: their profiles cannot leak into other tests."""
    with FakeProviderProcess("openai") as gpt, FakeProviderProcess("anthropic") as claude:
        yield gpt, claude


@pytest.fixture(scope="module")
def cluster(kube, kubectl, providers) -> Iterator[Any]:
    gpt, claude = providers
    kubectl("apply", "-f", str(REPO / "crds"))
    kubectl("wait", "--for=condition=Established", "crd/modelroutes.modelway.io", "--timeout=60s")
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    kubectl.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "llm-keys", "labels": {"modelway.io/credentials": "true"}},
                "data": {"openai": b64(DEFAULT_KEYS["openai"]), "anthropic": b64(DEFAULT_KEYS["anthropic"])},
            },
            _provider("gpt", "openai", gpt.base_url + "/v1"),
            _provider("claude", "anthropic", claude.base_url),
        ],
        "-n",
        NS,
    )
    yield kubectl


def _provider(name: str, kind: str, url: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelway.io/v1alpha1",
        "kind": "ModelProvider",
        "metadata": {"name": name},
        "spec": {"type": kind, "baseURL": url, "credentialsRef": {"name": "llm-keys", "key": kind}},
    }


@pytest.fixture(scope="module")
def controller(cluster, kube, tmp_path_factory) -> Iterator[ControllerProcess]:
    process = ControllerProcess(
        kube.kubeconfig,
        tmp_path_factory.mktemp("experiments-e2e"),
        extra_args=["--experiment-interval", "0.5"],
        env={"POD_NAMESPACE": NS, "POD_NAME": "controller-experiments"},
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def sidecar(cluster, controller, tmp_path_factory) -> Iterator[SidecarProcess]:
    workdir: Path = tmp_path_factory.mktemp("experiments-sidecar")
    process = controller_sidecar(
        controller, pod_token(cluster, NS, "web"), workdir, "web", extra_args=["--experiment-report-seconds", "0.2"]
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
def fakes(providers) -> Iterator[tuple[FakeProviderProcess, FakeProviderProcess]]:
    for fake in providers:
        fake.reset()
    yield providers
    for fake in providers:
        fake.reset()


@pytest.fixture
def route(cluster, sidecar) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Applies the test's `chat` route (one rule with the given experiment); deleted afterwards, and
    gone from the sidecar before the next test, whose requests must not count for this experiment."""

    def apply(experiment: dict[str, Any]) -> None:
        cluster.apply(
            {
                "apiVersion": "modelway.io/v1alpha1",
                "kind": "ModelRoute",
                "metadata": {"name": "chat"},
                "spec": {"model": "chat", "rules": [{"retry": NO_RETRY, "experiment": experiment}]},
            },
            "-n",
            NS,
        )

    yield apply
    cluster("delete", "modelroute", "chat", "-n", NS, "--ignore-not-found", "--wait")

    def gone() -> bool:
        try:
            _ask_many(sidecar, 1, threads=1)
        except openai.NotFoundError:
            return True
        return False

    wait_until(gone, what="the route gone from the sidecar")


def _arm(name: str, provider: str, model: str) -> dict[str, Any]:
    return {"name": name, "backends": [{"provider": provider, "model": model}]}


GPT_ARM = ("gpt", "gpt-4o")
CLAUDE_ARM = ("claude", "claude-sonnet-4-5")


def _ask_many(sidecar: SidecarProcess, count: int, *, threads: int = 8) -> list[str | None]:
    """`count` chat completions through the sidecar with the openai SDK: each answer's model, None for an error."""
    client = openai.OpenAI(base_url=sidecar.base_url + "/v1", api_key="unused", max_retries=0, timeout=30)

    def ask(_: int) -> str | None:
        try:
            return client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}]).model
        except openai.NotFoundError:
            raise
        except openai.APIStatusError as error:
            assert error.status_code == 502, error  # a provider's 500 comes back as the gateway's 502
            return None

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(ask, range(count)))


def _entry(kubectl: Any) -> dict[str, Any]:
    entries = kubectl.json("get", "modelroute", "chat", "-n", NS).get("status", {}).get("experiments") or [{}]
    result: dict[str, Any] = entries[0]
    return result


def _column(kubectl: Any) -> str:
    """What `kubectl get mwr` prints in the EXPERIMENT column."""
    return kubectl(
        "get", "mwr", "chat", "-n", NS, "-o", "custom-columns=EXPERIMENT:.status.experiment", "--no-headers"
    ).stdout.strip()


def _wait_serving(sidecar: SidecarProcess) -> None:
    """The route reached the sidecar: a request is answered (or fails at the provider), not a 404."""

    def served() -> bool:
        try:
            _ask_many(sidecar, 1, threads=1)
        except openai.NotFoundError:
            return False
        return True

    wait_until(served, what="the experiment's route in the sidecar")


def test_an_ab_test_stops_with_the_winner_and_promotion_moves_the_traffic(cluster, sidecar, fakes, route):
    gpt, _ = fakes
    gpt.profile(error_rate=0.3, seed=7)  # the control fails 30% of the time, the candidate never
    route(
        {
            "arms": [_arm("flaky", *GPT_ARM), _arm("steady", *CLAUDE_ARM)],
            "metric": "errorRate",
            "minimumDetectableEffect": 0.1,
            "minimumSample": 30,
            "promote": True,
        }
    )
    _wait_serving(sidecar)
    wait_until(lambda: _entry(cluster).get("state") == "Running", what="the experiment Running in status")
    answers = _ask_many(sidecar, 400)
    assert answers.count(None) > 5  # the flaky arm did fail (until the winner was promoted, maybe mid-way)
    entry = wait_until(lambda: (e := _entry(cluster)).get("state") == "Winner" and e, timeout=30, what="a winner")
    assert entry["winner"] == "steady" and entry["promoted"] == "steady"
    assert {arm["name"]: arm["share"] for arm in entry["arms"]} == {"flaky": 0.0, "steady": 1.0}
    assert sum(arm["samples"] for arm in entry["arms"]) >= 60
    (comparison,) = entry["comparisons"]
    assert comparison["high"] < 0  # the candidate's error rate is lower, surely
    assert _column(cluster) == "Winner steady (promoted)"
    assert "Winner steady (promoted)" in cluster("get", "mwr", "-n", NS).stdout

    # The sidecar gets the promoted split: every request now goes to the winner, and succeeds.
    def all_to_the_winner() -> bool:
        before = len(gpt.requests())
        return _ask_many(sidecar, 40) == ["claude-sonnet-4-5"] * 40 and len(gpt.requests()) == before

    wait_until(all_to_the_winner, timeout=30, what="all traffic on the promoted winner")


def test_a_running_test_s_samples_and_estimate_move_in_status(cluster, sidecar, fakes, route):
    route(
        {
            "arms": [_arm("one", *GPT_ARM), _arm("two", *CLAUDE_ARM)],
            "metric": "errorRate",
            "minimumDetectableEffect": 0.01,  # both arms alike: far from a decision after a few hundred
            "minimumSample": 30,
        }
    )
    _wait_serving(sidecar)
    seen = []
    for total in (60, 120, 180):
        assert None not in _ask_many(sidecar, 60)

        def counted(total: int = total) -> dict[str, Any] | None:
            entry = _entry(cluster)
            return entry if sum(arm["samples"] for arm in entry.get("arms", [])) >= total else None

        entry = wait_until(counted, timeout=20, what=f"{total} samples in status")
        assert entry["state"] == "Running" and _column(cluster) == "Running"
        seen.append(entry)
    widths = [e["comparisons"][0]["high"] - e["comparisons"][0]["low"] for e in seen if e.get("comparisons")]
    assert len(widths) >= 2 and widths == sorted(widths, reverse=True)  # the interval narrows as it runs


def test_a_canary_that_breaches_its_guardrail_is_rolled_back(cluster, sidecar, fakes, route):
    gpt, _ = fakes
    gpt.profile(error_rate=0.4, seed=11)  # the canary fails 40% of the time
    route(
        {
            "arms": [_arm("stable", *CLAUDE_ARM), _arm("canary", *GPT_ARM)],
            "metric": "errorRate",
            "minimumDetectableEffect": 0.1,
            "minimumSample": 30,
            "guardrails": [{"metric": "errorRate", "margin": 0.05}],
            "rollout": {"steps": [50, 100], "pause": "1h"},  # only a breach ends the first step
        }
    )
    _wait_serving(sidecar)
    entry = wait_until(lambda: (e := _entry(cluster)).get("rollout") and e, what="the rollout in status")
    assert entry["state"] == "RollingOut" and entry["rollout"]["share"] == 50
    assert _column(cluster) == "RollingOut canary=50%"
    _ask_many(sidecar, 300)
    entry = wait_until(lambda: (e := _entry(cluster)).get("state") == "RolledBack" and e, timeout=30, what="rollback")
    assert entry["rolledBack"] is True and entry["guardrail"]["arm"] == "canary"
    assert {arm["name"]: arm["share"] for arm in entry["arms"]} == {"stable": 1.0, "canary": 0.0}
    assert _column(cluster) == "RolledBack canary"

    def all_on_the_control() -> bool:
        before = len(gpt.requests())
        return _ask_many(sidecar, 40) == ["claude-sonnet-4-5"] * 40 and len(gpt.requests()) == before

    wait_until(all_on_the_control, timeout=30, what="all traffic back on the control")


def test_an_adaptive_rule_moves_its_traffic_to_the_faster_backend(cluster, sidecar, fakes, route):
    gpt, claude = fakes
    gpt.profile(delay=0.25)  # the gpt backend answers a quarter second later than claude
    route(
        {
            "strategy": "adaptive",
            "arms": [_arm("slow", *GPT_ARM), _arm("fast", *CLAUDE_ARM)],
            "metric": "latency",
            "minimumDetectableEffect": 0.05,
            "minimumSample": 30,
        }
    )
    _wait_serving(sidecar)

    def shares() -> dict[str, float]:
        return {arm["name"]: arm.get("share", 0.0) for arm in _entry(cluster).get("arms", [])}

    def converged() -> bool:
        _ask_many(sidecar, 40)
        return shares().get("fast", 0.0) >= 0.9

    wait_until(converged, timeout=60, what="the bandit's shares on the faster backend")
    assert re.search(r"slow=\d+% fast=9\d%", cluster("get", "mwr", "chat", "-n", NS).stdout)
    assert shares()["slow"] <= 0.1

    def traffic_follows() -> bool:
        before = len(gpt.requests()), len(claude.requests())
        _ask_many(sidecar, 100)
        to_slow, to_fast = len(gpt.requests()) - before[0], len(claude.requests()) - before[1]
        return to_slow + to_fast == 100 and to_slow <= 20

    wait_until(traffic_follows, timeout=30, what="the traffic on the faster backend")


def test_an_adaptive_arm_that_breaches_its_guardrail_gets_no_more_traffic(cluster, sidecar, fakes, route):
    gpt, claude = fakes
    gpt.profile(error_rate=0.4, seed=5)  # the candidate is cheaper to wait for but fails 40% of the time
    claude.profile(delay=0.1)
    route(
        {
            "strategy": "adaptive",
            "arms": [_arm("control", *CLAUDE_ARM), _arm("flaky", *GPT_ARM)],
            "metric": "latency",
            "minimumDetectableEffect": 0.05,
            "minimumSample": 30,
            "guardrails": [{"metric": "errorRate", "margin": 0.05}],
            "reward": {"latency": 1},
        }
    )
    _wait_serving(sidecar)

    def excluded() -> dict[str, Any] | None:
        _ask_many(sidecar, 40)
        entry = _entry(cluster)
        return entry if entry.get("excluded") else None

    entry = wait_until(excluded, timeout=60, what="the flaky arm excluded")
    assert [breach["arm"] for breach in entry["excluded"]] == ["flaky"]
    assert {arm["name"]: arm["share"] for arm in entry["arms"]} == {"control": 1.0, "flaky": 0.0}
    assert "(excluded flaky)" in _column(cluster)

    def all_on_the_control() -> bool:
        before = len(gpt.requests())
        return _ask_many(sidecar, 40) == ["claude-sonnet-4-5"] * 40 and len(gpt.requests()) == before

    wait_until(all_on_the_control, timeout=30, what="no traffic to the excluded arm")
