"""The controller's limit store: its flags, and every snapshot it compiles carrying it, the URL never shown.

No sockets: `parse_args`, a Controller over an in-memory store, `modelway dev`'s hand-over to the controller.
"""

from __future__ import annotations

import pytest

from controller import dev
from controller.__main__ import parse_args
from controller.core import Controller
from controller.store import ResourceStore
from controller.workload import Workload
from proxy.snapshot import LimitStore, Secret, Snapshot, content_version, parse_snapshot, to_wire
from tests.unit.test_policy_compile import EU_SAAS, IN_CLUSTER, US_SAAS, chat_route, policy

PASSWORD = "s3cret-redis-pass"
URL = f"redis://:{PASSWORD}@redis.modelway.svc:6379/0"
FILES = ["--source", "files", "--config-dir", "/tmp", "--dev-token-file", "/tmp/token"]


def test_the_url_from_the_environment_becomes_a_store_and_leaves_the_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELWAY_LIMITS_REDIS_URL", URL)
    args = parse_args([*FILES, "--limits-timeout", "0.25"])
    store = args.limit_store
    assert isinstance(store, LimitStore)
    assert store.url.get_secret_value() == URL and store.timeout_seconds == 0.25 and not store.cluster
    assert PASSWORD not in repr(args) and PASSWORD not in repr(store)  # whatever prints the settings


def test_the_flags_and_the_cluster_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELWAY_LIMITS_REDIS_URL", raising=False)
    monkeypatch.setenv("MODELWAY_LIMITS_REDIS_CLUSTER", "true")
    store = parse_args([*FILES, "--limits-redis-url", "rediss://node-0:6379"]).limit_store
    assert store is not None and store.cluster and store.timeout_seconds == 0.1


def test_without_a_url_there_is_no_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELWAY_LIMITS_REDIS_URL", raising=False)
    monkeypatch.delenv("MODELWAY_LIMITS_REDIS_CLUSTER", raising=False)
    assert parse_args(FILES).limit_store is None


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--limits-redis-url", f"http://:{PASSWORD}@redis:6379"], "must start with one of redis://"),
        (
            ["--limits-redis-url", f"redis+sentinel://:{PASSWORD}@s:26379/m", "--limits-redis-cluster"],
            "a redis:// or rediss:// node",
        ),
        (["--limits-redis-cluster"], "needs --limits-redis-url"),
        (["--limits-redis-url", URL, "--limits-timeout", "0"], "--limits-timeout must be more than 0"),
    ],
)
def test_a_bad_setting_is_refused_without_showing_the_url(
    argv: list[str], says: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MODELWAY_LIMITS_REDIS_URL", raising=False)
    monkeypatch.delenv("MODELWAY_LIMITS_REDIS_CLUSTER", raising=False)
    with pytest.raises(SystemExit):
        parse_args([*FILES, *argv])
    err = capsys.readouterr().err
    assert says in err and PASSWORD not in err


# --- every snapshot carries it -----------------------------------------------------------


async def _snapshot(store: LimitStore | None) -> Snapshot:
    resources = ResourceStore()
    for item in (EU_SAAS, US_SAAS, IN_CLUSTER, chat_route(), policy("caps", limits=[{"name": "b", "usdPerDay": 5}])):
        resources.apply(item)
    controller = Controller(store=resources, limit_store=store)
    await controller.recompute()
    return controller.compiled_for(Workload("team-a", "bot")).snapshot


def _store(url: str = URL, **kwargs: object) -> LimitStore:
    return LimitStore(url=Secret(url), **kwargs)  # type: ignore[arg-type]


async def test_every_snapshot_carries_the_store_and_its_version_follows_it() -> None:
    shared = await _snapshot(_store())
    assert shared.limit_store == _store()
    assert shared.policy.limits and shared.version == content_version(shared)
    assert (await _snapshot(None)).limit_store is None
    versions = {
        (await _snapshot(None)).version,
        shared.version,
        (await _snapshot(_store(URL.replace(PASSWORD, "rotated")))).version,  # a new password is a push
        (await _snapshot(_store(cluster=True))).version,
        (await _snapshot(_store(timeout_seconds=0.3))).version,
    }
    assert len(versions) == 5


async def test_the_sidecar_gets_the_url_and_no_dump_shows_it() -> None:
    shared = await _snapshot(_store())
    received = parse_snapshot(to_wire(shared))  # what goes down the stream, read as the sidecar does
    assert received.limit_store is not None and received.limit_store.url.get_secret_value() == URL
    assert received.version == shared.version
    assert PASSWORD not in str(shared.masked()) and PASSWORD not in repr(shared)


# --- modelway dev hands it to the controller ------------------------------------------------


def test_modelway_dev_passes_the_store_to_the_controller_in_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    args = dev.parse_args(
        ["dev", "--config-dir", "/tmp", "--limits-redis-url", URL, "--limits-redis-cluster", "--limits-timeout", "0.2"]
    )
    flags, env = dev.controller_limits(args, {"PATH": "/bin"})
    assert env == {"PATH": "/bin", "MODELWAY_LIMITS_REDIS_URL": URL}
    assert PASSWORD not in " ".join(flags)  # a command line is visible to every user of the machine
    for name, value in env.items():  # what the controller process then makes of it
        monkeypatch.setenv(name, value)
    store = parse_args([*FILES, *flags]).limit_store
    assert store == _store(cluster=True, timeout_seconds=0.2)


def test_modelway_dev_without_a_store_changes_nothing() -> None:
    args = dev.parse_args(["dev", "--config-dir", "/tmp"])
    assert dev.controller_limits(args, {"PATH": "/bin"}) == ([], {"PATH": "/bin"})
