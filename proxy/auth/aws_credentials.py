"""Where a provider's AWS credentials come from: one small interface, read on every request.

`credentials()` is synchronous and cheap (it returns what the source holds), so signing in a
translator never waits. A source whose credentials expire (the pod's web identity exchanged at
STS, `AssumeRoleWithWebIdentity`) keeps the current ones in the same holder and has a background
task replace them before they expire; requests only ever read the holder.
"""

from __future__ import annotations

from typing import Protocol

from proxy.auth.sigv4 import AwsCredentials


class AwsCredentialSource(Protocol):
    def credentials(self) -> AwsCredentials | None:
        """The credentials to sign with now; None when there are none (yet)."""
        ...

    def missing(self) -> str:
        """Why `credentials()` gave None (no secret in it), for the request's error."""
        ...


class StaticCredentials:
    """Long-term (or externally rotated) keys from the provider's Secret: a new snapshot brings new ones."""

    def __init__(self, credentials: AwsCredentials) -> None:
        self._credentials = credentials

    def credentials(self) -> AwsCredentials | None:
        return self._credentials

    def missing(self) -> str:
        return "no AWS credentials"  # (never: static keys are always there)

    def __repr__(self) -> str:
        return f"StaticCredentials(access_key_id={self._credentials.access_key_id[:4]}...)"
