"""What some calls return, as small frozen types (most calls return the object dict)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"
SA_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True, slots=True)
class ObjectList:
    items: list[dict[str, Any]]
    resource_version: str  # watch from here to see every change after the list


@dataclass(frozen=True, slots=True)
class TokenReview:
    authenticated: bool
    username: str = ""
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    audiences: tuple[str, ...] = ()
    error: str = ""

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> TokenReview:
        user = status.get("user") or {}
        return cls(
            authenticated=bool(status.get("authenticated")),
            username=str(user.get("username") or ""),
            uid=str(user.get("uid") or ""),
            groups=tuple(user.get("groups") or ()),
            extra={k: tuple(v) for k, v in (user.get("extra") or {}).items()},
            audiences=tuple(status.get("audiences") or ()),
            error=str(status.get("error") or ""),
        )

    @property
    def pod_name(self) -> str | None:
        """Set for a token bound to a Pod (a projected ServiceAccount token volume)."""
        return next(iter(self.extra.get(POD_NAME_EXTRA, ())), None)

    @property
    def pod_uid(self) -> str | None:
        return next(iter(self.extra.get(POD_UID_EXTRA, ())), None)

    @property
    def service_account(self) -> tuple[str, str] | None:
        """(namespace, name) for a ServiceAccount token."""
        if not self.username.startswith(SA_PREFIX):
            return None
        namespace, _, name = self.username[len(SA_PREFIX) :].partition(":")
        return (namespace, name) if namespace and name else None
