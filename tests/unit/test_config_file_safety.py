"""Config files hold anything: the readers turn every content into a clean error (file, line, field,
never the line's text), and edits that drop most routes are held until the file is stable."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.sources import files as dev_files
from controller.sources.files import FileError, FileSource, read_file
from controller.store import ResourceStore
from proxy.snapshot import Snapshot
from proxy.snapshot_file import SnapshotError, read_snapshot_file, watch_snapshot_file
from shared.config_text import parse_yaml, removal_verdict

KEY = "sk-unit-0a1b2c3d4e5f60718293a4b5c6d7e8f9"

BROKEN_KEY_LINES = [
    f'apiKey: {KEY}: "oops\n',
    f'apiKey: "{KEY}\n',
    f"apiKey: [{KEY}\n",
    f"apiKey: {KEY}\n\t- tab\n",
    f"apiKey: '{KEY}' trailing\n",
    f"apiKey: {{{KEY}\n",
    f"apiKey: !{KEY} x\n",
    f"apiKey: *{KEY}\n",
    f"apiKey: &a {KEY}\napiKey2: &a\n  - *b\n",
]


# --- YAML: depth, size, messages -----------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["[" * 100_000, "{a: " * 5000, "".join(f"{'  ' * i}k:\n" for i in range(400)), "- " * 3000 + "x"]
)
def test_deep_yaml_is_a_clean_error_not_a_recursion_error(text: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nested more than 100 levels"):
        parse_yaml(text)
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    with pytest.raises(FileError, match="nested more than 100 levels"):
        read_file(path)


def test_nesting_up_to_the_bound_still_reads() -> None:
    assert parse_yaml("[" * 99 + "]" * 99) is not None


def test_an_alias_bomb_is_refused_but_anchors_still_work(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
    )
    with pytest.raises(ValueError, match="aliases are expanded"):
        parse_yaml(bomb)
    assert parse_yaml("base: &b {type: openai}\nother: *b\n") == {
        "base": {"type": "openai"},
        "other": {"type": "openai"},
    }


@pytest.mark.parametrize("line", BROKEN_KEY_LINES)
def test_syntax_errors_name_line_and_column_never_the_text(line: str, tmp_path: Path) -> None:
    text = "providers:\n  - name: oai\n" + "    " + line.replace("\n", "\n    ").rstrip() + "\n"
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SnapshotError) as caught:
        read_snapshot_file(path)
    message = str(caught.value)
    assert KEY not in message and KEY[:12] not in message
    if "line" in message:
        assert "column" in message
    dev = tmp_path / "dev.yaml"
    dev.write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData:\n  " + line.replace("\n", "\n  "))
    try:
        read_file(dev)
    except FileError as exc:
        assert KEY not in str(exc) and KEY[:12] not in str(exc)


def test_invalid_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"providers: []\nroutes:\n  - name: \xff\n")
    with pytest.raises(SnapshotError, match="line 3: not UTF-8 text"):
        read_snapshot_file(path)
    with pytest.raises(FileError, match="line 3: not UTF-8 text"):
        read_file(path)


def test_validation_errors_never_echo_input(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(f"providers: [{{name: x, type: openai, baseUrl: {KEY}, apiKey: {{nested: {KEY}}}}}]\n")
    with pytest.raises(SnapshotError) as caught:
        read_snapshot_file(path)
    assert "providers.0" in str(caught.value) and KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: [a, b]\n", "data: must be a mapping"),
        ("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: 5\n", "stringData: must be a mapping"),
        ("apiVersion: v1\nkind: List\nitems: 5\n", "items: must be a list"),
        ("apiVersion: v1\nkind: List\nitems: {a: b}\n", "items: must be a list"),
        ("kind: List\nitems: [5]\n", "expected a Kubernetes object"),
        ("kind: ModelRoute\nmetadata: [x]\n", "ModelRoute ?"),
    ],
)
def test_dev_files_of_the_wrong_shape_say_where(text: str, said: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(FileError) as caught:
        read_file(path)
    assert said in str(caught.value) and "bad.yaml document 1" in str(caught.value)


def test_deep_json_in_a_dev_folder_is_a_clean_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000)
    with pytest.raises(FileError, match=r"deep\.json is not valid JSON"):
        read_file(path)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.binary(max_size=400) | st.text(alphabet="[]{}:-,&*!|>'\"#\n\t ak%@`", max_size=400).map(str.encode))
def test_any_bytes_are_a_clean_error_or_a_snapshot(data: bytes) -> None:
    """Whatever a file holds: a snapshot, or the one exception type the watchers expect."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"fuzz-{os.getpid()}.yaml"
    path.write_bytes(data)
    try:
        with contextlib.suppress(SnapshotError):
            read_snapshot_file(path)
        with contextlib.suppress(FileError):
            read_file(path)
    finally:
        path.unlink()


# --- which edits go live at once --------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "explicit", "verdict"),
    [
        ("abcdef", "abcdef", False, "apply"),
        ("abcdef", "abcdefg", False, "apply"),
        ("abcdef", "abcde", False, "apply"),  # one route: an ordinary edit
        ("abcdef", "abcd", False, "apply"),  # 2 of 6: not most
        ("abcdef", "abc", False, "apply"),  # half: not most
        ("abcdef", "ab", False, "hold"),  # 4 of 6
        ("abcdef", "a", False, "hold"),  # cut after the first
        ("ab", "a", False, "apply"),  # 1 removed: below the minimum of 2
        ("abc", "a", False, "hold"),
        ("abcdef", "", False, "refuse"),  # every route, not said on purpose
        ("a", "", False, "refuse"),
        ("abcdef", "", True, "apply"),  # `routes: []`
        ("", "", False, "apply"),
    ],
)
def test_removal_verdict(old: str, new: str, explicit: bool, verdict: str) -> None:
    assert removal_verdict(list(old), list(new), explicit_empty=explicit)[0] == verdict


# --- the snapshot watcher ---------------------------------------------------------------


def _snapshot_yaml(names: list[str], *, explicit: bool = True) -> str:
    routes = "".join(
        f"  - {{name: {n}, model: {n}, rules: [{{backends: [{{provider: p, model: x}}]}}]}}\n" for n in names
    )
    text = "providers:\n  - {name: p, type: openai, baseUrl: 'http://127.0.0.1:9/v1', apiKey: k}\n"
    return text + ("routes:\n" + routes if names else ("routes: []\n" if explicit else ""))


def _write(path: Path, text: str) -> None:
    old = path.stat().st_mtime_ns if path.exists() else 0
    with open(path, "w") as out:
        out.write(text)
    if path.stat().st_mtime_ns <= old:
        os.utime(path, ns=(old + 1_000_000, old + 1_000_000))


class _Watch:
    def __init__(self, path: Path, **kw: Any) -> None:
        self.live: list[Snapshot] = []
        self.fail_next = False
        initial = read_snapshot_file(path).snapshot

        def on_change(snapshot: Snapshot) -> bool:
            if self.fail_next:
                self.fail_next = False
                raise RuntimeError("compile failed")
            self.live.append(snapshot)
            return True

        self.task = asyncio.create_task(watch_snapshot_file(path, initial=initial, on_change=on_change, **kw))

    def routes(self) -> list[str]:
        return [r.name for r in self.live[-1].routes] if self.live else []


async def _until(predicate: Any, timeout: float = 3) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_the_snapshot_watcher_holds_refuses_and_survives(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.yaml"
    _write(path, _snapshot_yaml(list("abcdef")))
    caplog.set_level(logging.INFO, logger="modelway.snapshot")
    # Stable for 1 s: long against the polls (20 ms), so a loaded machine cannot let a held cut go live
    # between two of the test's writes, and "at once" (a rename) is told apart from "once stable".
    stable = 1.0
    watch = _Watch(path, interval=0.02, stable_seconds=stable)
    await asyncio.sleep(0.05)  # the watcher has taken the file's first signature
    try:
        _write(path, _snapshot_yaml(["a"]))  # cut after the first route: held
        await _until(lambda: "holding it" in caplog.text)
        assert watch.live == []
        _write(path, _snapshot_yaml(list("abcdefg")))  # the writer finished: live, the cut never was
        await _until(lambda: watch.routes() == list("abcdefg"))
        assert len(watch.live) == 1
        _write(path, _snapshot_yaml(["a"]))  # and left so: live once stable, with a WARNING
        await _until(lambda: watch.routes() == ["a"])
        assert any(
            r.levelno == logging.WARNING and "removed 6 of 7 routes: b, c, d, e, f, g" in r.getMessage()
            for r in caplog.records
        )
        _write(path, _snapshot_yaml(list("abc")))
        await _until(lambda: watch.routes() == list("abc"))
        _write(path, _snapshot_yaml([], explicit=False))  # no routes key: refused, even once stable
        await _until(lambda: "Write `routes: []`" in caplog.text)
        await asyncio.sleep(stable + 0.2)
        assert watch.routes() == list("abc")
        for bad in ("[" * 100_000, "\udcff", "- a\n"):  # nothing stops the watcher
            _write(path, bad) if bad != "\udcff" else path.write_bytes(b"\xff\xfe")
            await asyncio.sleep(0.06)
        watch.fail_next = True
        _write(path, _snapshot_yaml(list("ab")))
        await _until(lambda: "could not be reloaded (RuntimeError)" in caplog.text)
        tmp = tmp_path / "next.yaml"
        tmp.write_text(_snapshot_yaml(["z"]))
        tmp.replace(path)  # written by rename: complete, so live at once though it drops most
        await _until(lambda: watch.routes() == ["z"], timeout=stable / 2)
        _write(path, _snapshot_yaml([]))  # `routes: []`: on purpose
        await _until(lambda: watch.routes() == [])
        assert not watch.task.done()
    finally:
        watch.task.cancel()


# --- the dev folder -------------------------------------------------------------------------


def _routes(names: list[str]) -> str:
    return "".join(
        f"---\napiVersion: modelway.io/v1alpha1\nkind: ModelRoute\nmetadata: {{name: {n}}}\n"
        f"spec: {{model: {n}, rules: [{{backends: [{{provider: p, model: x}}]}}]}}\n"
        for n in names
    )


def _route_names(store: ResourceStore) -> list[str]:
    return sorted(r.metadata.name for r in store.view().routes)


def test_the_dev_folder_holds_refuses_and_applies_explicit_emptiness(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "routes.yaml"
    _write(path, _routes(list("abcdef")))
    store = ResourceStore()
    source = FileSource(tmp_path, stable_seconds=0.2)
    source.rescan(store)
    caplog.set_level(logging.INFO, logger="modelway.sources.files")
    _write(path, _routes(["a"]))
    source.rescan(store)
    assert _route_names(store) == list("abcdef") and "holding it" in caplog.text
    time.sleep(0.25)
    source.rescan(store)
    assert _route_names(store) == ["a"]
    assert "removed 5 of 6 resource(s): ModelRoute default/b" in caplog.text
    _write(path, "# all commented out\n")
    source.rescan(store)
    time.sleep(0.25)
    source.rescan(store)
    assert _route_names(store) == ["a"] and "now holds no resources" in caplog.text
    _write(path, "apiVersion: v1\nkind: List\nitems: []\n")
    source.rescan(store)
    assert _route_names(store) == []
    _write(path, _routes(list("abc")))
    source.rescan(store)
    path.unlink()  # gone for a moment (an editor's save): kept
    source.rescan(store)
    assert _route_names(store) == list("abc")
    _write(path, _routes(list("abc")))
    source.rescan(store)
    path.unlink()  # and gone for good: dropped, with a WARNING
    source.rescan(store)
    time.sleep(0.25)
    source.rescan(store)
    assert _route_names(store) == [] and "was removed; dropped its 3 resource(s)" in caplog.text


async def test_the_dev_watcher_survives_a_failing_poll(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FileSource(tmp_path, poll_interval=0.01)
    calls = []

    def flaky(directory: Path) -> dict[Path, Any]:
        calls.append(1)
        if len(calls) == 2:
            raise RecursionError("boom")
        return {}

    monkeypatch.setattr(dev_files, "scan_folder", flaky)
    task = asyncio.create_task(source.run(ResourceStore()))
    try:
        await _until(lambda: len(calls) >= 4)
        assert not task.done() and "retrying" in caplog.text
    finally:
        task.cancel()
