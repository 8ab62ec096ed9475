"""Bad and half-written config files: the watcher logs them and keeps watching, start-up refuses
them in one clean line (exit 2), and no request is lost while a file is being written."""

from __future__ import annotations

import copy
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial.files_helpers import (
    BOMB,
    DEEP,
    DEEP_MAP,
    FILE_KEY,
    Caller,
    DevProcess,
    apikey_syntax_error,
    dev_apikey_syntax_error,
    dev_provider,
    dev_routes,
    dump_yaml,
    snapshot_routes,
    wait_until,
    write_in_place,
)
from tests.integration.sidecar import REPO, SidecarProcess

NAMES = ["m", "r1", "r2", "r3", "r4", "r5"]


def _bad_snapshots(openai_url: str) -> dict[str, tuple[bytes, str]]:
    """name -> (content, what the error must say)."""
    return {
        "invalid-utf8": (b"providers: []\nroutes:\n  - name: \xff\xfe\n", "line 3: not UTF-8"),
        "deep-flow": (DEEP, "nested more than 100 levels"),
        "deep-block": (DEEP_MAP, "nested more than 100 levels"),
        "alias-bomb": (BOMB, "aliases are expanded"),
        "apikey-syntax": (apikey_syntax_error(openai_url), "line 5, column"),
        "list-at-top": (b"- a\n- b\n", "must be a mapping"),
    }


@pytest.fixture
def snapshot_sidecar(fake_openai_process: Any) -> Iterator[SidecarProcess]:
    data = snapshot_routes(fake_openai_process.base_url, NAMES)
    with SidecarProcess(data, extra_args=["--reload-stable-seconds", "0.5"]) as process:
        yield process


def _version(sidecar: SidecarProcess) -> str:
    return sidecar.admin("/readyz")[1]["version"]


def test_each_bad_snapshot_is_logged_and_later_good_edits_load(
    snapshot_sidecar: SidecarProcess, fake_openai_process: Any
) -> None:
    sidecar, url = snapshot_sidecar, fake_openai_process.base_url
    for index, (name, (content, said)) in enumerate(_bad_snapshots(url).items()):
        before = _version(sidecar)
        marker = len(sidecar.logs())
        write_in_place(sidecar.snapshot_path, content)
        wait_until(lambda said=said, marker=marker: said in sidecar.logs()[marker:], 10, f"{name}: {said!r} in the log")
        new = sidecar.logs()[marker:]
        assert "keeping the last good snapshot" in new and str(sidecar.snapshot_path) in new, name
        assert "Traceback" not in new and FILE_KEY not in new, name
        assert _version(sidecar) == before, name
        # the watcher is alive: a good edit (one more route) goes live
        write_in_place(sidecar.snapshot_path, dump_yaml(snapshot_routes(url, [*NAMES, f"new{index}"])))
        sidecar.wait_for_version(lambda v, b=before: v != b)
    assert FILE_KEY not in sidecar.logs()


def _run_all(commands: dict[str, list[str]]) -> dict[str, tuple[int, str, str]]:
    """Runs the commands side by side (each start-up is seconds of imports); (status, stdout, stderr) by name."""
    procs = {
        name: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        for name, cmd in commands.items()
    }
    outputs = {name: proc.communicate(timeout=90) for name, proc in procs.items()}
    return {name: (procs[name].returncode, *outputs[name]) for name in procs}


# Start-up reads files with the same code as the watchers (every kind of content is in the unit
# tests); these are the ones whose start-up was a traceback or printed a key.
AT_START = {"invalid-utf8", "deep-flow", "apikey-syntax", "secret-data-list", "list-items-5"}


def test_a_bad_snapshot_at_start_is_one_clean_line_and_exit_2(tmp_path: Path, fake_openai_process: Any) -> None:
    bad = {k: v for k, v in _bad_snapshots(fake_openai_process.base_url).items() if k in AT_START}
    for name, (content, _) in bad.items():
        (tmp_path / f"{name}.yaml").write_bytes(content)
    results = _run_all(
        {
            name: [sys.executable, "-m", "proxy", "--snapshot", str(tmp_path / f"{name}.yaml"), "--port", "0"]
            for name in bad
        }
    )
    for name, (status, out, err) in results.items():
        path, said = tmp_path / f"{name}.yaml", bad[name][1]
        assert status == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and said in lines[0] and str(path) in lines[0], (name, err)
        assert "Traceback" not in err and FILE_KEY not in err + out, name


def test_half_written_snapshots_never_drop_routes(snapshot_sidecar: SidecarProcess, fake_openai_process: Any) -> None:
    sidecar, url = snapshot_sidecar, fake_openai_process.base_url
    full = dump_yaml(snapshot_routes(url, NAMES))  # providers first, then routes, "m" the first route
    after_first = full.index(b"- name: r1")  # the file cut after its first route
    providers_only = full[: full.index(b"routes:")]
    cuts = [
        b"",
        providers_only,
        full[: full.index(b"routes:") + len(b"routes:")],
        full[:after_first],
        providers_only + b"routes:\n",
        b"   \n# nothing yet\n",
    ]
    caller = Caller(sidecar.base_url, "m")
    caller.start()
    rng = random.Random(7)
    try:
        until = time.monotonic() + 3
        while time.monotonic() < until:  # each lasts well under the 0.5 s it would need to go live
            write_in_place(sidecar.snapshot_path, rng.choice([*cuts, full[: rng.randrange(len(full))]]))
            time.sleep(rng.uniform(0.02, 0.25))
            write_in_place(sidecar.snapshot_path, full)
            time.sleep(rng.uniform(0.02, 0.1))
    finally:
        statuses = caller.stop()
    assert len(statuses) > 20 and set(statuses) == {200}, sorted(set(statuses))
    assert "Traceback" not in sidecar.logs()


def test_a_cut_file_that_stays_goes_live_with_a_warning_and_an_empty_one_never(
    snapshot_sidecar: SidecarProcess, fake_openai_process: Any
) -> None:
    sidecar, url = snapshot_sidecar, fake_openai_process.base_url
    full = dump_yaml(snapshot_routes(url, NAMES))
    before = _version(sidecar)
    write_in_place(sidecar.snapshot_path, full[: full.index(b"- name: r1")])
    wait_until(lambda: "holding it until the file has not changed" in sidecar.logs(), 5, "the hold")
    sidecar.wait_for_version(lambda v: v != before)  # stable for 0.5 s: it goes live, loudly
    logs = sidecar.logs()
    assert "WARNING" in logs and "removed 5 of 6 routes: r1, r2, r3, r4, r5" in logs
    live = _version(sidecar)
    write_in_place(sidecar.snapshot_path, b"")
    write_in_place(sidecar.snapshot_path, full[: full.index(b"routes:")])  # providers only, no routes key
    wait_until(lambda: "Write `routes: []` to remove every route on purpose" in sidecar.logs(), 5, "refusal")
    time.sleep(1)
    assert _version(sidecar) == live
    explicit = copy.deepcopy(snapshot_routes(url, []))
    write_in_place(sidecar.snapshot_path, dump_yaml(explicit))  # `routes: []`: on purpose, live at once
    sidecar.wait_for_version(lambda v: v != live)
    assert "removed 1 of 1 routes: m" in sidecar.logs()


# --- modelway dev ------------------------------------------------------------------------


def _bad_dev_files() -> dict[str, tuple[bytes, str]]:
    return {
        "secret-data-list": (
            b"apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: [a, b]\n",
            "data: must be a mapping",
        ),
        "list-items-5": (b"apiVersion: v1\nkind: List\nitems: 5\n", "items: must be a list"),
        "invalid-utf8": (b"apiVersion: v1\nkind: Secret\nmetadata: {name: \xff}\n", "line 3: not UTF-8"),
        "deep": (DEEP, "nested more than 100 levels"),
        "alias-bomb": (BOMB, "aliases are expanded"),
        "apikey-syntax": (dev_apikey_syntax_error(), "line 5, column"),
    }


@pytest.fixture
def dev_folder(tmp_path: Path, fake_openai_process: Any) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "providers.yaml").write_text(dev_provider(fake_openai_process.base_url))
    (folder / "routes.yaml").write_text(dev_routes(NAMES))
    return folder


def test_modelway_dev_logs_each_bad_file_and_loads_later_good_edits(dev_folder: Path) -> None:
    with DevProcess(dev_folder) as dev:
        wait_until(lambda: "m" in dev.models(), 20, "the routes")
        for index, (name, (content, said)) in enumerate(_bad_dev_files().items()):
            marker = len(dev.logs())
            write_in_place(dev_folder / "extra.yaml", content)
            wait_until(lambda said=said, marker=marker: said in dev.logs()[marker:], 10, f"{name}: {said!r} in the log")
            new = dev.logs()[marker:]
            assert "extra.yaml" in new and "Traceback" not in new and FILE_KEY not in new, name
            write_in_place(dev_folder / "extra.yaml", dev_routes([f"new{index}"]).encode())
            wait_until(lambda i=index: f"new{i}" in dev.models(), 15, f"{name}: the good edit live")
        assert dev.alive() and FILE_KEY not in dev.logs()


def test_modelway_dev_refuses_bad_files_at_start_in_one_line(dev_folder: Path, tmp_path: Path) -> None:
    bad = {k: v for k, v in _bad_dev_files().items() if k in AT_START}
    for name, (content, _) in bad.items():
        folder = tmp_path / name
        folder.mkdir()
        for good in dev_folder.iterdir():
            (folder / good.name).write_bytes(good.read_bytes())
        (folder / "extra.yaml").write_bytes(content)
    results = _run_all(
        {name: [sys.executable, "-m", "controller.dev", "dev", "--config-dir", str(tmp_path / name)] for name in bad}
    )
    for name, (status, out, err) in results.items():
        assert status == 2, (name, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and bad[name][1] in lines[0] and "extra.yaml" in lines[0], (name, err)
        assert "Traceback" not in err + out and FILE_KEY not in err, name


def test_modelway_dev_half_written_routes_never_drop_requests(dev_folder: Path) -> None:
    full = dev_routes(NAMES).encode()
    first_doc_end = full.index(b"---", 3)
    cuts = [b"", full[:first_doc_end], full[: first_doc_end + 40], b"# editing\n"]
    routes = dev_folder / "routes.yaml"
    with DevProcess(dev_folder) as dev:
        wait_until(lambda: "m" in dev.models(), 20, "the routes")
        caller = Caller(dev.base_url, "m")
        caller.start()
        rng = random.Random(11)
        try:
            until = time.monotonic() + 4
            while time.monotonic() < until:  # each cut lasts well under the 1 s it needs to go live
                write_in_place(routes, rng.choice([*cuts, full[: rng.randrange(len(full))]]))
                time.sleep(rng.uniform(0.05, 0.4))
                write_in_place(routes, full)
                time.sleep(rng.uniform(0.05, 0.2))
        finally:
            statuses = caller.stop()
        assert len(statuses) > 20 and set(statuses) == {200}, sorted(set(statuses))
        # A cut that dropped no more than half went live at once; the last full write may not be read yet.
        wait_until(lambda: dev.models() >= set(NAMES), 15, "the whole file live again")
        # cut after its first document and left so: live after the pause, with a WARNING naming the rest
        write_in_place(routes, full[:first_doc_end])
        wait_until(lambda: "r1" not in dev.models(), 15, "the cut file live once stable")
        assert "removed 5 of 6 resource(s): ModelRoute default/r1" in dev.logs()
        write_in_place(routes, b"")  # emptied: refused, "m" stays
        wait_until(lambda: "now holds no resources" in dev.logs(), 10, "the refusal")
        assert "m" in dev.models()
