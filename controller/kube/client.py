"""A thin async client for the Kubernetes API over one aiohttp session.

Only what the controller needs: get/list/watch, create/replace/patch/delete,
server-side apply of status, Events, TokenReview, Pods and Leases. Objects are plain
dicts (the sources validate them with the pydantic models). Failures are
`KubeApiError` (`ResourceGone` for 410) or `KubeConnectionError`; messages
never carry a request's credentials.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Self

import aiohttp

from controller.kube.config import KubeConfig
from controller.kube.errors import KubeApiError, KubeConnectionError
from controller.kube.resources import (
    EVENTS,
    LEASES,
    MUTATING_WEBHOOK_CONFIGURATIONS,
    PODS,
    SECRETS,
    TOKEN_REVIEWS,
    ResourceType,
)
from controller.kube.results import ObjectList, TokenReview
from controller.kube.watch import WatchEvent, iter_events

FIELD_MANAGER = "modelway"
# Connections for requests (watches have their own pool: a watch holds its connection for minutes, so
# sharing one bounded pool with them could leave no connection for a request). Each TLS connection
# costs asyncio a 256 KiB read buffer, freed only when the cyclic collector gets to it after the
# connection closes: a burst of requests (thousands of sidecars connecting, each a TokenReview and a
# Pod read; a first status pass over thousands of objects) queues for these instead of opening more.
# Not fewer: sidecars connecting after a restart share them with a status pass's 16 writers.
REQUEST_CONNECTIONS = 64
WATCH_READ_SLACK = 30.0  # beyond timeoutSeconds: a silent (half-open) watch is given up after this
DEFAULT_AUDIENCE = "modelway"  # what the sidecar's projected token is minted for

PatchType = Literal["merge", "json", "strategic", "apply"]
_PATCH_CONTENT_TYPES: dict[PatchType, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",  # JSON is YAML: the body is sent as JSON
}


class KubeClient:
    """Use as `async with KubeClient(config) as client:` (or call `close()`)."""

    def __init__(self, config: KubeConfig, *, request_timeout: float = 30.0, user_agent: str = "modelway") -> None:
        self.config = config
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._connect_timeout = request_timeout
        self._user_agent = user_agent
        self._http: aiohttp.ClientSession | None = None
        self._watch_http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for session in (self._http, self._watch_http):
            if session is not None:
                await session.close()
        self._http = self._watch_http = None

    # --- reading --------------------------------------------------------------------

    async def get(self, rt: ResourceType, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        return await self._request("GET", rt.path(namespace=namespace, name=name))

    async def list(
        self,
        rt: ResourceType,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> ObjectList:
        """Every object (following `continue` pages) and the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        version = ""
        async for page in self.list_pages(
            rt, namespace=namespace, label_selector=label_selector, field_selector=field_selector, page_size=page_size
        ):
            version = version or page.resource_version
            items.extend(page.items)
        return ObjectList(items, version)

    async def list_pages(
        self,
        rt: ResourceType,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> AsyncGenerator[ObjectList, None]:
        """The list one page at a time (each with the list's resourceVersion), so a caller that keeps
        less than the objects as sent never holds thousands of them at once."""
        params = _selectors(label_selector, field_selector) | {"limit": str(page_size)}
        version = ""
        while True:
            page = await self._request("GET", rt.path(namespace=namespace), params=params)
            meta = page.get("metadata") or {}
            version = version or str(meta.get("resourceVersion") or "")
            items: list[dict[str, Any]] = page.get("items") or []
            for item in items:  # list items come without kind/apiVersion
                item.setdefault("kind", rt.kind)
                item.setdefault("apiVersion", rt.api_version)
            yield ObjectList(items, version)
            if not meta.get("continue"):
                return
            params["continue"] = str(meta["continue"])

    async def watch(
        self,
        rt: ResourceType,
        *,
        resource_version: str | None,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Events after `resource_version`, bookmarks included, until the server ends the watch.

        An async generator: close it (`contextlib.aclosing`) to drop the connection early.
        Raises `ResourceGone` when the version is too old, whether as HTTP 410 or an ERROR event.
        """
        path = rt.path(namespace=namespace)
        params = _selectors(label_selector, field_selector) | {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if resource_version:
            params["resourceVersion"] = resource_version
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self._connect_timeout, sock_read=timeout_seconds + WATCH_READ_SLACK
        )
        try:
            async with self._session(watch=True).get(
                self.config.server + path, params=params, headers=self._headers(), timeout=timeout
            ) as resp:
                if resp.status != 200:
                    raise await _error(resp, "GET", path)
                async for event in iter_events(resp.content, path=path):
                    yield event
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _unreachable("WATCH", self.config.server, path, exc) from exc

    # --- writing --------------------------------------------------------------------

    async def create(
        self, rt: ResourceType, body: Mapping[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        namespace = namespace or (body.get("metadata") or {}).get("namespace")
        return await self._request("POST", rt.path(namespace=namespace), body=body)

    async def replace(self, rt: ResourceType, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT: fails with 409 Conflict if `metadata.resourceVersion` is not the current one."""
        meta = body.get("metadata") or {}
        return await self._request("PUT", rt.path(namespace=meta.get("namespace"), name=meta["name"]), body=body)

    async def patch(
        self,
        rt: ResourceType,
        name: str,
        body: Any,
        *,
        namespace: str | None = None,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        params: dict[str, str] = {}
        if field_manager or patch_type == "apply":
            params["fieldManager"] = field_manager or FIELD_MANAGER
        if force:
            params["force"] = "true"
        path = rt.path(namespace=namespace, name=name, subresource=subresource)
        return await self._request(
            "PATCH", path, params=params, body=body, content_type=_PATCH_CONTENT_TYPES[patch_type]
        )

    async def patch_status(
        self,
        rt: ResourceType,
        name: str,
        status: Mapping[str, Any],
        *,
        namespace: str | None = None,
        field_manager: str = FIELD_MANAGER,
        force: bool = True,
    ) -> dict[str, Any]:
        """Server-side apply of `status`: we own the fields we set, nothing else is touched."""
        body = {
            "apiVersion": rt.api_version,
            "kind": rt.kind,
            "status": dict(status),
            "metadata": {"name": name} | ({"namespace": namespace} if namespace else {}),
        }
        return await self.patch(
            rt,
            name,
            body,
            namespace=namespace,
            patch_type="apply",
            subresource="status",
            field_manager=field_manager,
            force=force,
        )

    async def delete(self, rt: ResourceType, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        return await self._request("DELETE", rt.path(namespace=namespace, name=name))

    async def create_event(
        self,
        *,
        regarding: Mapping[str, Any],
        reason: str,
        note: str,
        action: str,
        reporting_instance: str,
        type: Literal["Normal", "Warning"] = "Normal",
        reporting_controller: str = "modelway.io/controller",
    ) -> dict[str, Any]:
        """An events.k8s.io/v1 Event about `regarding` (an object reference: kind, name, namespace, uid...)."""
        namespace = str(regarding.get("namespace") or "default")
        now = datetime.now(UTC)
        name = f"{regarding.get('name', 'modelway')}.{time.time_ns():x}"  # as client-go's recorder names them
        body = {
            "apiVersion": EVENTS.api_version,
            "kind": EVENTS.kind,
            "metadata": {"name": name, "namespace": namespace},
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "regarding": dict(regarding),
            "reason": reason,
            "note": note[:1024],
            "action": action,
            "type": type,
            "reportingController": reporting_controller,
            "reportingInstance": reporting_instance,
        }
        return await self.create(EVENTS, body, namespace=namespace)

    async def review_token_status(
        self, token: str, *, audiences: Sequence[str] = (DEFAULT_AUDIENCE,)
    ) -> dict[str, Any]:
        """The TokenReview `status` (authenticated, user{username, uid, groups, extra}, audiences, error).

        A token the API server accepts for none of `audiences` comes back not authenticated,
        also from an authenticator that ignores audiences (status.audiences must overlap ours).
        """
        body = {
            "apiVersion": TOKEN_REVIEWS.api_version,
            "kind": TOKEN_REVIEWS.kind,
            "spec": {"token": token, "audiences": list(audiences)},
        }
        status = dict((await self.create(TOKEN_REVIEWS, body)).get("status") or {})
        if status.get("authenticated") and audiences and not set(status.get("audiences") or ()) & set(audiences):
            return {"authenticated": False, "error": f"token not valid for audiences {list(audiences)}"}
        return status

    async def token_review(self, token: str, *, audiences: Sequence[str] = (DEFAULT_AUDIENCE,)) -> TokenReview:
        """Who presents `token`, if the API server accepts it for one of `audiences`."""
        return TokenReview.from_status(await self.review_token_status(token, audiences=audiences))

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Pod, or None if there is none (by that name) any more."""
        return await self._get_or_none(PODS, name, namespace=namespace)

    # --- the controller's own certificates (webhook) --------------------------------

    async def get_secret(self, name: str, *, namespace: str) -> dict[str, Any] | None:
        """The Secret, or None if there is none by that name."""
        return await self._get_or_none(SECRETS, name, namespace=namespace)

    async def get_mutating_webhook_configuration(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.get(MUTATING_WEBHOOK_CONFIGURATIONS, name)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    # --- leases (leader election) ---------------------------------------------------

    async def get_lease(self, name: str, *, namespace: str) -> dict[str, Any] | None:
        return await self._get_or_none(LEASES, name, namespace=namespace)

    async def create_lease(self, name: str, *, namespace: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """409 Conflict (KubeApiError) if another replica created it first."""
        body = {
            "apiVersion": LEASES.api_version,
            "kind": LEASES.kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": dict(spec),
        }
        return await self.create(LEASES, body, namespace=namespace)

    async def update_lease(self, lease: Mapping[str, Any]) -> dict[str, Any]:
        """Optimistic: 409 Conflict (KubeApiError) if someone else wrote the Lease since we read it."""
        return await self.replace(LEASES, lease)

    # --- plumbing -------------------------------------------------------------------

    async def _get_or_none(self, rt: ResourceType, name: str, *, namespace: str) -> dict[str, Any] | None:
        try:
            return await self.get(rt, name, namespace=namespace)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    def _session(self, *, watch: bool = False) -> aiohttp.ClientSession:
        """The pool for requests (REQUEST_CONNECTIONS at most) or the one for watches (one connection each)."""
        if watch:
            if self._watch_http is None:  # created lazily: aiohttp wants a running loop
                connector = aiohttp.TCPConnector(ssl=self.config.ssl_context or False, limit=0)
                self._watch_http = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
            return self._watch_http
        if self._http is None:
            connector = aiohttp.TCPConnector(ssl=self.config.ssl_context or False, limit=REQUEST_CONNECTIONS)
            self._http = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._http

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": self._user_agent}
        if content_type:
            headers["Content-Type"] = content_type
        token = self.config.auth.token() if self.config.auth else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = self._headers(content_type if data is not None else None)
        try:
            async with self._session().request(
                method, self.config.server + path, params=params, data=data, headers=headers
            ) as resp:
                if resp.status >= 400:
                    raise await _error(resp, method, path)
                result = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _unreachable(method, self.config.server, path, exc) from exc
        except ValueError:
            raise KubeConnectionError(f"{method} {path}: the API server sent a body that is not JSON") from None
        return result if isinstance(result, dict) else {}


def _selectors(label_selector: str | None, field_selector: str | None) -> dict[str, str]:
    params = {}
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    return params


async def _error(resp: aiohttp.ClientResponse, method: str, path: str) -> KubeApiError:
    text = await resp.text(errors="replace")
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = text
    return KubeApiError.from_status(resp.status, body, method=method, path=path)


def _unreachable(method: str, server: str, path: str, exc: BaseException) -> KubeConnectionError:
    cause = str(exc) or type(exc).__name__
    return KubeConnectionError(f"{method} {path}: connection to the Kubernetes API at {server} failed: {cause}")
