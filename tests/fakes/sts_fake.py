"""Fake AWS STS answering AssumeRoleWithWebIdentity as documented (form POST in, XML out), and the
EKS Pod Identity agent (`GET /v1/credentials`, the pod's token as `Authorization`, JSON out).

It checks the role ARN and the web identity token, and issues the keys it was given with a session
token that carries its expiry (`FakeSessionToken-<epoch>-<n>`), which the fake Bedrock refuses once
past (ExpiredTokenException), as AWS refuses expired session credentials. `StsThread` runs it on its
own loop in a thread, for synchronous tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .threaded import AppThread

XMLNS = "https://sts.amazonaws.com/doc/2011-06-15/"
TOKEN_PREFIX = "FakeSessionToken-"


@dataclass
class StsState:
    role_arn: str
    web_identity_token: str
    access_key_id: str
    secret_access_key: str
    lifetime_seconds: float = 3600.0
    fail_next: int = 0  # answer this many exchanges with a 503
    calls: list[dict[str, Any]] = field(default_factory=list)


STATE = web.AppKey("sts_state", StsState)


def session_token_expiry(token: str) -> float | None:
    """The expiry a fake session token carries, None for any other token."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    return float(token[len(TOKEN_PREFIX) :].split("-")[0])


def _error(status: int, code: str, message: str) -> web.Response:
    body = (
        f'<ErrorResponse xmlns="{XMLNS}"><Error><Type>Sender</Type><Code>{code}</Code>'
        f"<Message>{message}</Message></Error><RequestId>fake</RequestId></ErrorResponse>"
    )
    return web.Response(status=status, text=body, content_type="text/xml")


async def _assume(request: web.Request) -> web.Response:
    state = request.app[STATE]
    form = await request.post()
    state.calls.append({"at": time.time(), **{k: str(v) for k, v in form.items()}})
    if state.fail_next > 0:
        state.fail_next -= 1
        return _error(503, "ServiceUnavailable", "Service is unable to handle request.")
    if form.get("Action") != "AssumeRoleWithWebIdentity" or form.get("Version") != "2011-06-15":
        return _error(400, "InvalidAction", "Could not find operation.")
    if form.get("RoleArn") != state.role_arn:
        return _error(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
    if form.get("WebIdentityToken") != state.web_identity_token:
        return _error(400, "InvalidIdentityToken", "Couldn't retrieve verification key from your identity provider")
    expires = time.time() + state.lifetime_seconds
    token = f"{TOKEN_PREFIX}{expires:.3f}-{len(state.calls)}"
    expiration = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(expires)) + f".{int(expires % 1 * 1000):03d}Z"
    body = (
        f'<AssumeRoleWithWebIdentityResponse xmlns="{XMLNS}"><AssumeRoleWithWebIdentityResult>'
        f"<SubjectFromWebIdentityToken>system:serviceaccount:team-a:app</SubjectFromWebIdentityToken>"
        f"<AssumedRoleUser><Arn>{state.role_arn}/{form.get('RoleSessionName')}</Arn>"
        f"<AssumedRoleId>AROAFAKE:{form.get('RoleSessionName')}</AssumedRoleId></AssumedRoleUser>"
        f"<Credentials><SessionToken>{token}</SessionToken>"
        f"<SecretAccessKey>{state.secret_access_key}</SecretAccessKey>"
        f"<Expiration>{expiration}</Expiration><AccessKeyId>{state.access_key_id}</AccessKeyId></Credentials>"
        f"<Provider>oidc.eks.eu-central-1.amazonaws.com/id/FAKE</Provider><Audience>sts.amazonaws.com</Audience>"
        f"</AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata>"
        f"</AssumeRoleWithWebIdentityResponse>"
    )
    return web.Response(text=body, content_type="text/xml")


async def _pod_identity(request: web.Request) -> web.Response:
    """The EKS Pod Identity agent: the pod's token in `Authorization`, the keys as JSON."""
    state = request.app[STATE]
    state.calls.append({"at": time.time(), "Authorization": request.headers.get("authorization", "")})
    if state.fail_next > 0:
        state.fail_next -= 1
        return web.json_response({"code": "ServiceUnavailable", "message": "try again"}, status=503)
    if request.headers.get("authorization") != state.web_identity_token:
        return web.json_response({"code": "AccessDeniedException", "message": "invalid token"}, status=400)
    expires = time.time() + state.lifetime_seconds
    return web.json_response(
        {
            "AccessKeyId": state.access_key_id,
            "SecretAccessKey": state.secret_access_key,
            "Token": f"{TOKEN_PREFIX}{expires:.3f}-{len(state.calls)}",
            "AccountId": "123456789012",
            "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)),
        }
    )


def create_app(state: StsState) -> web.Application:
    app = web.Application()
    app[STATE] = state
    app.router.add_post("/", _assume)
    app.router.add_get("/v1/credentials", _pod_identity)
    return app


class StsThread(AppThread):
    """The fake STS on its own event loop in a daemon thread; a context manager."""

    def __init__(self, state: StsState) -> None:
        super().__init__(lambda: create_app(state))
        self.state = state
