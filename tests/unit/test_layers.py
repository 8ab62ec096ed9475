"""The project's layering rules, checked on the import graph (no imports executed).

- `proxy` (the sidecar) never imports `controller`;
- `controller` imports only `proxy.snapshot` from the sidecar (the contract between the two);
- `shared` imports neither program;
- the pure modules listed in PURE (decisions, translation, compilation) import no I/O.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROXY = REPO / "proxy"

# Pure modules decide and translate; they must not reach for sockets, files or the loop.
PURE = [
    "proxy/snapshot",
    "shared",
    "proxy/sse.py",
    "proxy/upstream.py",
    "proxy/errors.py",
    "proxy/routing",
    "proxy/providers",
    "proxy/frontends",
    "proxy/redaction",
    "controller/api",
    "controller/compile.py",
    "controller/compile_provider.py",
    "controller/compile_route.py",
    "controller/store.py",
    "controller/check.py",
    "controller/status.py",
    "controller/experiments",
    "controller/spend.py",
]
IO_MODULES = {
    "aiohttp",
    "asyncio",
    "socket",
    "ssl",
    "urllib.request",
    "http.client",
    "subprocess",
    "requests",
    "httpx",
    "os",
    "pathlib",
    "shutil",
    "opentelemetry",
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if "." in node.module:
                names.add(node.module)
            else:  # `from proxy import snapshot` is an import of proxy.snapshot
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _files(spec: str) -> list[Path]:
    target = REPO / spec
    return sorted(target.rglob("*.py")) if target.is_dir() else [target]


def _top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("path", sorted(PROXY.rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_proxy_never_imports_the_controller(path):
    assert not any(_top(n) == "controller" for n in _imports(path))


@pytest.mark.parametrize("path", [p for spec in PURE for p in _files(spec)], ids=lambda p: str(p.relative_to(REPO)))
def test_pure_modules_do_no_io(path):
    bad = {n for n in _imports(path) if n in IO_MODULES or _top(n) in IO_MODULES}
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}; keep I/O in the relay/server layer"


@pytest.mark.parametrize("path", sorted((REPO / "controller").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_controller_imports_only_the_snapshot_from_proxy(path):
    # What both programs must apply alike (a credential's shape, reading untrusted config text)
    # lives in shared/, which imports neither of them.
    bad = {n for n in _imports(path) if _top(n) == "proxy" and n != "proxy.snapshot"}
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}; the controller may use proxy.snapshot only"


@pytest.mark.parametrize("path", sorted((REPO / "shared").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_shared_imports_neither_program(path):
    assert not any(_top(n) in ("proxy", "controller") for n in _imports(path))
