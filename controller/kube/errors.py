"""Errors from the Kubernetes API, with messages an operator can act on.

The API answers failures with a `Status` object (reason, message, code); we keep
those and add a hint for the statuses whose cause is usually ours to fix
(credentials, RBAC, a CRD not installed). Never carries a request's headers.
"""

from __future__ import annotations

from typing import Any

_HINTS = {
    401: "the API server rejected our credentials; check the ServiceAccount token or kubeconfig user",
    403: "RBAC does not allow this; grant it in the controller's (Cluster)Role",
    404: "for a modelway.io resource this usually means the CRDs are not installed: kubectl apply -f crds/",
}


class KubeError(Exception):
    """Base of every error this client raises."""


class KubeConnectionError(KubeError):
    """The API server could not be reached, or the connection broke or timed out."""


class KubeApiError(KubeError):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str, *, method: str = "", path: str = "") -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.method = method
        self.path = path
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f"{self.method} {self.path}: " if self.method else ""
        text = f"{where}{self.status} {self.reason}: {self.message}"
        hint = _HINTS.get(self.status)
        if hint and (self.status != 404 or "modelway.io" in self.path):
            text += f" (hint: {hint})"
        return text

    @classmethod
    def from_status(cls, status: int, body: Any, *, method: str = "", path: str = "") -> KubeApiError:
        """From an HTTP status and the decoded body (a Status object, or text from a proxy)."""
        if isinstance(body, dict) and body.get("kind") == "Status":
            reason = str(body.get("reason") or "")
            message = str(body.get("message") or "")
            status = int(body.get("code") or status)
        else:
            reason, message = "", str(body or "").strip()[:500]
        error_type = ResourceGone if status == 410 else cls
        return error_type(status, reason or _REASONS.get(status, "Error"), message, method=method, path=path)


class ResourceGone(KubeApiError):
    """410 Gone: the resourceVersion we watch from is too old (compacted); re-list."""


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Gone",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}
