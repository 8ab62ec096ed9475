"""One interface for where resources come from: the Kubernetes API or a folder of YAML."""

from __future__ import annotations

from typing import Protocol

from controller.store import ResourceStore


class Source(Protocol):
    async def run(self, store: ResourceStore) -> None:
        """Fill `store` and keep it current until cancelled.

        Implementations survive their own trouble (reconnect, re-list, re-read)
        and log it; they never leave the store holding half a change.
        """
        ...

    async def wait_synced(self) -> None:
        """Returns once the store holds a complete first view of every kind."""
        ...
