"""Fake Microsoft Entra ID token endpoint: the OAuth 2.0 client credentials grant as documented.

`POST /{tenant}/oauth2/v2.0/token`, form encoded: `grant_type=client_credentials`, `client_id`,
`scope` (`https://cognitiveservices.azure.com/.default`), and either `client_secret` or
`client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` with
`client_assertion` (the pod's federated token). Answers
`{"token_type": "Bearer", "expires_in": N, "ext_expires_in": N, "access_token": "<JWT>"}`, or
Entra's error shape (`error`, `error_description` with an AADSTS code, `error_codes`,
`timestamp`, `trace_id`, `correlation_id`) with Entra's status.

The access tokens are JWT-shaped (`aud`, `tid`, `appid`, `exp`) and signed with a key only the
fakes know, so the fake Azure OpenAI (another process) checks a bearer token without asking this
one (`check_access_token`): a token past its `exp` is refused there as Azure refuses it.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

AUDIENCE = "https://cognitiveservices.azure.com"
SCOPE = AUDIENCE + "/.default"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_SIGNING_KEY = b"modelway-fake-entra-signing-key"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_access_token(*, tenant_id: str, client_id: str, expires: float, n: int) -> str:
    header = _b64(json.dumps({"typ": "JWT", "alg": "HS256", "kid": "fake"}).encode())
    claims = {"aud": AUDIENCE, "tid": tenant_id, "appid": client_id, "exp": expires, "n": n}
    payload = _b64(json.dumps(claims).encode())
    signature = _b64(hmac.digest(_SIGNING_KEY, f"{header}.{payload}".encode(), "sha256"))
    return f"{header}.{payload}.{signature}"


def check_access_token(token: str, *, now: float | None = None) -> str | None:
    """Why Azure would refuse this bearer token, or None when it is good."""
    try:
        header, payload, signature = token.split(".")
        expected = _b64(hmac.digest(_SIGNING_KEY, f"{header}.{payload}".encode(), "sha256"))
        claims = json.loads(_unb64(payload))
    except (ValueError, json.JSONDecodeError):
        return "not a token this identity platform issued"
    if not hmac.compare_digest(signature, expected):
        return "bad signature"
    if claims.get("aud") != AUDIENCE:
        return "wrong audience"
    if float(claims.get("exp", 0)) <= (time.time() if now is None else now):
        return "expired"
    return None


@dataclass
class EntraState:
    tenant_id: str
    client_id: str
    client_secret: str | None = None
    federated_token: str | None = None
    lifetime_seconds: float = 3599.0
    fail_next: int = 0  # answer this many requests with a 503
    calls: list[dict[str, Any]] = field(default_factory=list)


STATE = web.AppKey("entra_state", EntraState)


def _error(status: int, error: str, code: int, description: str) -> web.Response:
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    body = {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {correlation} "
        f"Timestamp: {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())}",
        "error_codes": [code],
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
        "trace_id": trace,
        "correlation_id": correlation,
    }
    return web.json_response(body, status=status)


async def _token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    form = {k: str(v) for k, v in (await request.post()).items()}
    state.calls.append({"at": time.time(), "tenant": request.match_info["tenant"], **form})
    if state.fail_next > 0:
        state.fail_next -= 1
        return _error(503, "temporarily_unavailable", 50196, "The server is temporarily unavailable.")
    if request.match_info["tenant"] != state.tenant_id:
        return _error(400, "invalid_tenant", 90002, f"Tenant '{request.match_info['tenant']}' not found.")
    if form.get("grant_type") != "client_credentials":
        return _error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
    if form.get("client_id") != state.client_id:
        return _error(
            400, "unauthorized_client", 700016,
            f"Application with identifier '{form.get('client_id')}' was not found in the directory.",
        )  # fmt: skip
    if form.get("scope") != SCOPE:
        return _error(400, "invalid_scope", 1002012, f"The provided value for scope {form.get('scope')} is not valid.")
    if "client_secret" in form:
        if state.client_secret is None or form["client_secret"] != state.client_secret:
            return _error(
                401, "invalid_client", 7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client "
                "secret value, not the client secret ID, for a secret added to app.",
            )  # fmt: skip
    elif form.get("client_assertion_type") == ASSERTION_TYPE:
        if state.federated_token is None or form.get("client_assertion") != state.federated_token:
            return _error(
                400, "invalid_client", 700211,
                "No matching federated identity record found for presented assertion issuer.",
            )  # fmt: skip
    else:
        return _error(
            401, "invalid_client", 7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )  # fmt: skip
    expires = time.time() + state.lifetime_seconds
    token = issue_access_token(
        tenant_id=state.tenant_id, client_id=state.client_id, expires=expires, n=len(state.calls)
    )
    lifetime = max(1, round(state.lifetime_seconds))
    return web.json_response(
        {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}
    )


def create_app(state: EntraState) -> web.Application:
    app = web.Application()
    app[STATE] = state
    app.router.add_post("/{tenant}/oauth2/v2.0/token", _token)
    return app
