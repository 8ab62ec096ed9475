"""Fixtures for the tests of the sidecar's upstream HTTP/1.1 client (proxy/http_client.py).

These tests run the client against real sockets on 127.0.0.1 (the servers are in servers.py) and
need no provider fakes or sidecar, so the package's autouse `_fresh_fakes` is overridden here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from proxy.http_client import HttpClient

# servers.py is a helper module, not a test module: have pytest rewrite its asserts too (it must be
# registered before anything imports it).
pytest.register_assert_rewrite("tests.integration.http_client.servers")


@pytest.fixture(autouse=True)
def _fresh_fakes() -> None:
    """Overrides the package's autouse fixture: these tests need no provider fakes or sidecar."""


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., HttpClient]]:
    """HttpClient factory; every client made is closed after the test."""
    clients: list[HttpClient] = []

    def make(**options: Any) -> HttpClient:
        clients.append(HttpClient(**options))
        return clients[-1]

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client: Callable[..., HttpClient]) -> HttpClient:
    return make_client()
