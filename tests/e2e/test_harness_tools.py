"""A missing tool is an error that says how to get it, never a skip."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import fixtures, tools


def test_missing_tool_says_how_to_build_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools, "TOOLS_BIN", tmp_path)
    with pytest.raises(tools.ToolMissing, match=r"kube-apiserver not found in .*: run `make tools`"):
        tools.find_tool("kube-apiserver")
    with pytest.raises(tools.ToolMissing, match="tests/tools/etcd"):
        tools.find_tool("etcd")


def test_missing_tool_fails_rather_than_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools, "TOOLS_BIN", tmp_path)
    with pytest.raises(pytest.fail.Exception, match=r"jaeger not found in .*: run `make tools`"):
        fixtures.tool("jaeger")


def test_missing_node_tool_says_how_to_build_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools, "TOOLS_BIN", tmp_path)
    with pytest.raises(tools.ToolMissing, match=r"kubelet not found in .*: run `make tools`.*tests/tools/kube"):
        tools.find_tool("kubelet")
    with pytest.raises(tools.ToolMissing, match="tests/tools/coredns"):
        tools.find_tool("coredns")
