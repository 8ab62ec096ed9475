"""FileSource: a folder of Kubernetes-style YAML/JSON into the store (no network, tmp dirs)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.api import ModelProvider, ModelRoute, Secret
from controller.sources.files import FileSource
from controller.store import ResourceStore

PROVIDER = """
apiVersion: modelway.io/v1alpha1
kind: ModelProvider
metadata: {name: openai}
spec:
  type: openai
  credentialsRef: {name: openai-key}
"""

ROUTE = """
apiVersion: modelway.io/v1alpha1
kind: ModelRoute
metadata: {name: %(name)s, namespace: %(namespace)s}
spec:
  model: %(model)s
  rules:
    - backends: [{provider: openai, model: gpt-4o-mini}]
"""

SECRET = """
apiVersion: v1
kind: Secret
metadata: {name: openai-key, labels: {modelway.io/credentials: "true"}}
stringData: {apiKey: sk-test}
"""


def route(name: str = "chat", *, model: str = "chat", namespace: str = "team-a") -> str:
    return ROUTE % {"name": name, "model": model, "namespace": namespace}


class Recorder:
    def __init__(self) -> None:
        self.calls = 0
        self.store = ResourceStore(on_change=self.changed)

    def changed(self) -> None:
        self.calls += 1


def write(path: Path, text: str) -> None:
    """Write and make sure the mtime moves even on a coarse-grained filesystem clock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    if path.stat().st_mtime_ns <= old:
        os.utime(path, ns=(old + 1_000_000, old + 1_000_000))


def names(resources: tuple[ModelProvider, ...] | tuple[ModelRoute, ...] | tuple[Secret, ...]) -> list[str]:
    return [f"{r.metadata.namespace}/{r.metadata.name}" for r in resources]


def test_loads_multi_document_yaml_and_defaults_the_namespace(tmp_path: Path) -> None:
    documents = [PROVIDER, route(), SECRET, "---", "# only a comment"]  # with empty documents
    write(tmp_path / "all.yaml", "\n---\n".join(documents))
    rec = Recorder()
    FileSource(tmp_path).rescan(rec.store)

    view = rec.store.view()
    assert names(view.providers) == ["default/openai"]
    assert names(view.routes) == ["team-a/chat"]
    assert names(view.secrets) == ["default/openai-key"]
    assert view.secrets[0].string_data == {"apiKey": "sk-test"}
    assert view.providers[0].spec.credentials_ref is not None


def test_reads_subfolders_json_and_base64_data_and_skips_the_rest(tmp_path: Path) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "k", "namespace": "ns"},
        "data": {"apiKey": base64.b64encode(b"sk-1").decode()},
    }
    write(tmp_path / "nested" / "deeper" / "secret.json", json.dumps(secret))
    write(tmp_path / "routes.yml", route())
    write(tmp_path / "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")  # other kinds: ignored
    write(tmp_path / "README.md", "not yaml: [")  # other suffixes: never read
    write(tmp_path / ".hidden.yaml", route("hidden", model="hidden"))  # editor/ConfigMap internals
    write(tmp_path / "..data" / "routes.yaml", route("copy", model="copy"))
    rec = Recorder()
    FileSource(tmp_path).rescan(rec.store)

    view = rec.store.view()
    assert names(view.routes) == ["team-a/chat"]
    assert view.secrets[0].data == {"apiKey": base64.b64encode(b"sk-1").decode()}
    assert names(view.secrets) == ["ns/k"]


def test_a_kind_list_is_expanded(tmp_path: Path) -> None:
    import yaml

    items = [yaml.safe_load(route("a", model="a")), yaml.safe_load(route("b", model="b"))]
    write(tmp_path / "list.yaml", yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    rec = Recorder()
    FileSource(tmp_path).rescan(rec.store)
    assert names(rec.store.view().routes) == ["team-a/a", "team-a/b"]


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_run_syncs_then_follows_changes(tmp_path: Path) -> None:
    write(tmp_path / "routes.yaml", route(model="chat"))
    rec = Recorder()
    source = FileSource(tmp_path, poll_interval=0.02)
    task = asyncio.create_task(source.run(rec.store))
    try:
        await asyncio.wait_for(source.wait_synced(), 5)
        assert [r.spec.model for r in rec.store.view().routes] == ["chat"]
        calls = rec.calls
        assert calls >= 1

        write(tmp_path / "routes.yaml", route(model="chat-v2"))
        await wait_for(lambda: [r.spec.model for r in rec.store.view().routes] == ["chat-v2"])
        assert rec.calls == calls + 1

        write(tmp_path / "more" / "provider.yaml", PROVIDER)  # a new file in a new folder
        await wait_for(lambda: len(rec.store.view().providers) == 1)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_unchanged_files_are_not_reread_and_do_not_notify(tmp_path: Path) -> None:
    write(tmp_path / "routes.yaml", route())
    rec = Recorder()
    source = FileSource(tmp_path)
    source.rescan(rec.store)
    calls = rec.calls
    source.rescan(rec.store)
    assert rec.calls == calls


def test_a_broken_file_keeps_its_previous_content_and_says_where(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "routes.yaml"
    write(path, route("chat", model="chat") + "---\n" + route("code", model="code"))
    rec = Recorder()
    source = FileSource(tmp_path)
    source.rescan(rec.store)
    before = rec.store.view()
    calls = rec.calls

    # Document 2 loses its backends: the whole file keeps its last good content.
    broken = (
        route("chat", model="chat-v2")
        + "---\n"
        + route("code", model="code").replace(
            "    - backends: [{provider: openai, model: gpt-4o-mini}]", "    - name: x"
        )
    )
    write(path, broken)
    with caplog.at_level(logging.ERROR, logger="modelway.sources.files"):
        source.rescan(rec.store)
    assert rec.store.view() == before
    assert rec.calls == calls
    message = caplog.text
    assert str(path) in message
    assert "document 2" in message
    assert "spec.rules.0: set backends" in message
    assert "keeping its previous content" in message

    # Reported once, not on every poll.
    caplog.clear()
    source.rescan(rec.store)
    assert caplog.text == ""

    # Fixed: the new content is taken.
    write(path, broken.replace("    - name: x", "    - backends: [{provider: openai, model: o3}]"))
    source.rescan(rec.store)
    assert sorted(r.spec.model for r in rec.store.view().routes) == ["chat-v2", "code"]


def test_invalid_yaml_keeps_previous_content(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "routes.yaml"
    write(path, route())
    rec = Recorder()
    source = FileSource(tmp_path)
    source.rescan(rec.store)
    write(path, route() + "\n  bad: [unclosed\n")
    with caplog.at_level(logging.ERROR):
        source.rescan(rec.store)
    assert names(rec.store.view().routes) == ["team-a/chat"]
    assert f"{path} is not valid YAML" in caplog.text


def test_a_new_broken_file_is_ignored_and_others_still_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "good.yaml", route())
    write(tmp_path / "bad.yaml", PROVIDER.replace("type: openai", "type: nonsense"))
    write(tmp_path / "bad-secret.yaml", SECRET.replace("stringData: {apiKey: sk-test}", "data: {apiKey: '***'}"))
    rec = Recorder()
    with caplog.at_level(logging.ERROR):
        FileSource(tmp_path).rescan(rec.store)
    assert names(rec.store.view().routes) == ["team-a/chat"]
    assert rec.store.view().providers == ()
    assert rec.store.view().secrets == ()
    assert "bad.yaml document 1" in caplog.text and "spec.type" in caplog.text
    assert "data.apiKey: not base64" in caplog.text
    assert "sk-test" not in caplog.text


def test_a_wrong_api_version_is_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "r.yaml", route().replace("modelway.io/v1alpha1", "modelway.io/v1"))
    rec = Recorder()
    with caplog.at_level(logging.ERROR):
        FileSource(tmp_path).rescan(rec.store)
    assert rec.store.view().routes == ()
    assert "apiVersion: must be modelway.io/v1alpha1" in caplog.text


def test_deleting_a_file_removes_its_resources(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", route("a", model="a"))
    write(tmp_path / "b.yaml", route("b", model="b") + "---\n" + PROVIDER)
    rec = Recorder()
    source = FileSource(tmp_path, stable_seconds=0)  # no wait for the file to stay deleted
    source.rescan(rec.store)
    assert names(rec.store.view().routes) == ["team-a/a", "team-a/b"]
    calls = rec.calls

    (tmp_path / "b.yaml").unlink()
    source.rescan(rec.store)
    assert names(rec.store.view().routes) == ["team-a/a"]
    assert rec.store.view().providers == ()
    assert rec.calls > calls


def test_a_resource_in_two_files_is_taken_from_the_last_and_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "a.yaml", route("chat", model="from-a"))
    write(tmp_path / "b.yaml", route("chat", model="from-b"))
    rec = Recorder()
    with caplog.at_level(logging.WARNING):
        FileSource(tmp_path).rescan(rec.store)
    assert [r.spec.model for r in rec.store.view().routes] == ["from-b"]
    assert "defined in" in caplog.text


def test_an_unlabelled_secret_is_used_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "s.yaml", SECRET.replace(', labels: {modelway.io/credentials: "true"}', ""))
    rec = Recorder()
    with caplog.at_level(logging.WARNING):
        FileSource(tmp_path).rescan(rec.store)
    assert names(rec.store.view().secrets) == ["default/openai-key"]
    assert "modelway.io/credentials=true" in caplog.text


async def test_a_missing_folder_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        await FileSource(tmp_path / "does-not-exist").run(ResourceStore())


async def test_an_empty_folder_syncs(tmp_path: Path) -> None:
    source = FileSource(tmp_path, poll_interval=0.02)
    task = asyncio.create_task(source.run(ResourceStore()))
    try:
        await asyncio.wait_for(source.wait_synced(), 5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
