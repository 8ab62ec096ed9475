"""Fake Google OAuth 2.0 token endpoint and GCE/GKE metadata server, as Google documents them.

- `POST /token`, form `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`: the
  JWT must be RS256-signed by the service account's key (checked with its public key), with `iss`
  the account's email, `aud` this token URI, a `scope`, and `exp - iat` at most an hour. Errors are
  `{"error": "invalid_grant", "error_description": "..."}` (400), as Google answers them.
- `GET /computeMetadata/v1/instance/service-accounts/default/token` with `Metadata-Flavor: Google`
  (without it: 403 text, as the metadata server answers).

Both answer `{"access_token": "ya29....", "expires_in": N, "token_type": "Bearer"}`. Access tokens
carry their expiry and are signed with a key only the fakes know, so the fake Vertex AI (another
process) checks them itself (`check_access_token`) and refuses expired ones.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
_SIGNING_KEY = b"modelway-fake-google-signing-key"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_access_token(*, account: str, expires: float, n: int) -> str:
    payload = _b64(json.dumps({"sub": account, "exp": expires, "n": n}).encode())
    return f"ya29.{payload}.{_b64(hmac.digest(_SIGNING_KEY, payload.encode(), 'sha256'))}"


def check_access_token(token: str, *, now: float | None = None) -> str | None:
    """Why Google would refuse this access token, or None when it is good."""
    prefix, _, rest = token.partition(".")
    payload, _, signature = rest.partition(".")
    if prefix != "ya29" or not payload or not signature:
        return "not an access token"
    if not hmac.compare_digest(signature, _b64(hmac.digest(_SIGNING_KEY, payload.encode(), "sha256"))):
        return "bad signature"
    if float(json.loads(_unb64(payload))["exp"]) <= (time.time() if now is None else now):
        return "expired"
    return None


@dataclass
class GoogleState:
    client_email: str
    public_key_pem: bytes  # the service account key's public half
    metadata_account: str = "app@my-project.iam.gserviceaccount.com"
    lifetime_seconds: float = 3599.0
    fail_next: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)


STATE = web.AppKey("google_state", GoogleState)


def _grant_error(description: str, error: str = "invalid_grant") -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=400)


def _verify_assertion(state: GoogleState, assertion: str, token_uri: str) -> str | None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        header_b64, claims_b64, signature_b64 = assertion.split(".")
        header, claims = json.loads(_unb64(header_b64)), json.loads(_unb64(claims_b64))
        signature = _unb64(signature_b64)
    except (ValueError, json.JSONDecodeError):
        return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
    if header.get("alg") != "RS256":
        return "Invalid JWT Signature."
    public = serialization.load_pem_public_key(state.public_key_pem)
    assert isinstance(public, rsa.RSAPublicKey)
    try:
        public.verify(signature, f"{header_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return "Invalid JWT Signature."
    if claims.get("iss") != state.client_email:
        return "Invalid JWT Signature."  # what Google says for a key of another account
    if claims.get("aud") != token_uri:
        return "Invalid JWT: Failed audience check."
    now = time.time()
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int) or not isinstance(exp, int) or exp - iat > 3600 or exp <= now or iat > now + 60:
        return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
    if not claims.get("scope"):
        return "Invalid JWT: no scope"
    return None


def _token_answer(state: GoogleState, account: str) -> web.Response:
    expires = time.time() + state.lifetime_seconds
    token = issue_access_token(account=account, expires=expires, n=len(state.calls))
    return web.json_response(
        {"access_token": token, "expires_in": max(1, round(state.lifetime_seconds)), "token_type": "Bearer"}
    )


async def _token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    form = {k: str(v) for k, v in (await request.post()).items()}
    state.calls.append({"at": time.time(), "path": request.path, **form})
    if state.fail_next > 0:
        state.fail_next -= 1
        return web.json_response({"error": "internal_failure", "error_description": "Backend error"}, status=503)
    if form.get("grant_type") != JWT_BEARER:
        return _grant_error("Invalid grant_type: " + form.get("grant_type", ""), "unsupported_grant_type")
    token_uri = str(request.url.with_query(None))
    if (problem := _verify_assertion(state, form.get("assertion", ""), token_uri)) is not None:
        return _grant_error(problem)
    return _token_answer(state, state.client_email)


async def _metadata_token(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state.calls.append({"at": time.time(), "path": request.path, "flavor": request.headers.get("Metadata-Flavor")})
    if request.headers.get("Metadata-Flavor") != "Google":
        return web.Response(status=403, text="Missing required header: Metadata-Flavor", content_type="text/html")
    if state.fail_next > 0:
        state.fail_next -= 1
        return web.Response(status=503, text="service unavailable")
    return _token_answer(state, state.metadata_account)


def create_app(state: GoogleState) -> web.Application:
    app = web.Application()
    app[STATE] = state
    app.router.add_post("/token", _token)
    app.router.add_get("/computeMetadata/v1/instance/service-accounts/default/token", _metadata_token)
    return app
