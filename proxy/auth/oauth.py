"""The OAuth 2.0 token endpoint answer (RFC 6749 section 5), shared by Entra ID and Google.

Success: `{"access_token": "...", "token_type": "Bearer", "expires_in": 3599}`. Failure: a 4xx
with `{"error": "invalid_client", "error_description": "..."}`. The errors raised here name the
endpoint's error code and description (scrubbed of anything shaped like a credential), never the
token or the credential sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import aiohttp
import orjson

from proxy.auth.refreshed import AccessToken, CredentialsError, read_bounded
from shared.scrub import scrub_shapes

MAX_LIFETIME_SECONDS = 24 * 3600


def parse_token_answer(status: int, body: bytes, *, what: str, now: float) -> AccessToken:
    try:
        data = orjson.loads(body)
    except ValueError:
        raise CredentialsError(f"{what} token endpoint answered {status} with a body that is not JSON") from None
    if not isinstance(data, dict):
        raise CredentialsError(f"{what} token endpoint's answer is not a JSON object")
    if status != 200 or "error" in data:
        code = str(data.get("error") or "unknown")[:100]
        description = str(data.get("error_description") or "")[:300]
        raise CredentialsError(
            f"{what} refused the token request ({status} {scrub_shapes(code)}): {scrub_shapes(description)}"
        )
    token, token_type, expires_in = data.get("access_token"), data.get("token_type", "Bearer"), data.get("expires_in")
    if not isinstance(token, str) or not token or any(c.isspace() or not c.isprintable() for c in token):
        raise CredentialsError(f"{what} token endpoint's answer has no usable access_token")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise CredentialsError(
            f"{what} token endpoint issued a token of type {scrub_shapes(str(token_type))[:40]!r}, not Bearer"
        )
    if isinstance(expires_in, str) and expires_in.isdigit():  # (older Entra endpoints send it as a string)
        expires_in = int(expires_in)
    if (
        isinstance(expires_in, bool)
        or not isinstance(expires_in, int | float)
        or not 0 < expires_in <= MAX_LIFETIME_SECONDS
    ):
        raise CredentialsError(f"{what} token endpoint's answer has no usable expires_in")
    return AccessToken(token=token, expires_at=now + float(expires_in))


async def post_token_form(
    session: aiohttp.ClientSession,
    url: str,
    form: Mapping[str, str],
    *,
    what: str,
    clock: Callable[[], float],
    timeout: float,
) -> AccessToken:
    sent_at = clock()  # the lifetime counts from the request, so the token is never held past its expiry
    async with session.post(
        url, data=dict(form), headers={"accept": "application/json"}, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as answer:
        body = await read_bounded(answer, what)
        status = answer.status
    return parse_token_answer(status, body, what=what, now=sent_at)
