"""Temporary credentials kept fresh: the holder requests read, and the task that refills it.

`credentials()` (AWS keys) or `token()` (an OAuth access token) is what a translator reads at
each request (synchronous: what the holder has, or None before the first fetch). `run()` fetches
at once, then again when a margin before expiry is left (or half the lifetime, for short-lived
ones); a failed fetch is retried with backoff, sooner as what is in hand nears its expiry, and
what is in hand is served until replaced. Each kind of source (STS web identity, the EKS Pod
Identity agent, Microsoft Entra ID, Google's token endpoints) only says how one fetch is made.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import aiohttp
import msgspec

from proxy.auth.sigv4 import AwsCredentials

log = logging.getLogger("modelway.auth")

MAX_ANSWER_BYTES = 64 * 1024


class CredentialsError(Exception):
    """A fetch was refused or its answer unreadable (the message names no secret)."""


async def read_bounded(answer: aiohttp.ClientResponse, what: str) -> bytes:
    body = b""
    async for chunk in answer.content.iter_chunked(16384):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise CredentialsError(f"{what} answer is over {MAX_ANSWER_BYTES} bytes")
    return body


class Expiring(Protocol):
    @property
    def expires_at(self) -> float | None: ...


class AccessToken(msgspec.Struct, frozen=True):
    """An OAuth 2.0 access token, sent as `Authorization: Bearer <token>`."""

    token: str
    expires_at: float | None = None

    def __repr__(self) -> str:  # never the token itself
        return f"AccessToken(expires_at={self.expires_at})"


T = TypeVar("T", bound=Expiring)


class Refreshed(Generic[T]):
    """A holder of something that expires; subclasses implement `_fetch`."""

    #: what the log lines call this source
    kind = "credentials"

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        retry_seconds: tuple[float, float] = (1.0, 60.0),
        refresh_margin_seconds: float = 600.0,  # the AWS SDKs refresh 10-15 minutes before expiry
    ) -> None:
        self._clock = clock
        self._retry = retry_seconds
        self._margin = refresh_margin_seconds
        self._current: T | None = None
        self._fetched_at = 0.0
        self._problem: str | None = None  # why the last fetch failed (no secret in it)
        self.refreshes = 0  # successful fetches

    def held(self) -> T | None:
        return self._current

    def _usable(self) -> T | None:
        """What is in hand, unless it has expired (a provider would refuse it)."""
        current = self._current
        if current is not None and current.expires_at is not None and current.expires_at <= self._clock():
            return None
        return current

    def missing(self) -> str:
        """Why there is nothing to send: for the error a request gets then."""
        if self._current is None:
            state, pending = f"no credentials yet from the {self.kind}", "first fetch under way"
        else:
            state, pending = f"the credentials from the {self.kind} expired and were not renewed", "renewal under way"
        return f"{state} ({f'last fetch failed: {self._problem}' if self._problem else pending})"

    async def _fetch(self, session: aiohttp.ClientSession) -> T:
        raise NotImplementedError

    async def refresh(self, session: aiohttp.ClientSession) -> T:
        credentials = await self._fetch(session)
        self._current, self._fetched_at, self._problem = credentials, self._clock(), None
        self.refreshes += 1
        return credentials

    def seconds_until_refresh(self) -> float:
        """When the current keys are due for a refresh: a margin before expiry, or half their lifetime."""
        current = self._current
        if current is None or current.expires_at is None:
            return 0.0
        lifetime = current.expires_at - self._fetched_at
        margin = min(self._margin, lifetime / 2)
        return max(0.0, current.expires_at - margin - self._clock())

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Keeps the holder filled until cancelled."""
        failures = 0
        while True:
            try:
                credentials = await self.refresh(session)
                failures = 0
                until = time.strftime("%H:%M:%SZ", time.gmtime(credentials.expires_at or 0))
                log.info("%s: new credentials until %s", self.kind, until)
                await asyncio.sleep(self.seconds_until_refresh())
            except asyncio.CancelledError:
                raise
            except (CredentialsError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                failures += 1
                delay = min(self._retry[1], self._retry[0] * 2 ** (failures - 1))
                current = self._current
                if current is not None and current.expires_at is not None:
                    delay = min(delay, max(self._retry[0], (current.expires_at - self._clock()) / 4))
                reason = str(exc) if isinstance(exc, CredentialsError) else type(exc).__name__
                self._problem = reason
                log.warning("%s: fetch failed (%s), retrying in %.0fs", self.kind, reason, delay)
                await asyncio.sleep(delay)


class RefreshedCredentials(Refreshed[AwsCredentials]):
    """An `AwsCredentialSource` whose keys expire."""

    kind = "AWS credentials"

    def credentials(self) -> AwsCredentials | None:
        return self._usable()


class RefreshedToken(Refreshed[AccessToken]):
    """A `TokenSource` whose access tokens expire."""

    kind = "OAuth token"

    def token(self) -> str | None:
        current = self._usable()
        return current.token if current is not None else None
