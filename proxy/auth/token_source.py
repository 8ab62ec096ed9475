"""Where a provider's bearer token comes from: one small interface, read on every request.

`token()` is synchronous and cheap: a static key returns itself; an OAuth source (Microsoft Entra
ID, Google) returns the access token its holder has, which a background task replaces before it
expires (`proxy.auth.refreshed`). No request ever waits for, or triggers, a token fetch.
"""

from __future__ import annotations

from typing import Protocol


class TokenSource(Protocol):
    def token(self) -> str | None:
        """The token to send now; None when there is none (yet)."""
        ...

    def missing(self) -> str:
        """Why `token()` gave None (no secret in it), for the request's error."""
        ...
