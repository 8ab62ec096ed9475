"""AWS Signature Version 4 for request headers (pure: no clock, no I/O; the caller passes the time).

The steps AWS documents, each its own function so tests can hold them to AWS's published test
suite (`aws-sig-v4-test-suite`):

1. canonical request: method, canonical URI, canonical query, canonical headers, signed header
   names, hex SHA-256 of the body;
2. string to sign: `AWS4-HMAC-SHA256`, the time, the credential scope
   (`<date>/<region>/<service>/aws4_request`), hex SHA-256 of the canonical request;
3. signing key: HMAC-SHA256 chained over "AWS4"+secret, date, region, service, "aws4_request";
4. `authorization: AWS4-HMAC-SHA256 Credential=<key id>/<scope>, SignedHeaders=..., Signature=...`.

The canonical URI is the request's path as sent (already percent-encoded) encoded once more,
as every service but S3 expects (Bedrock model ids carry `:` and ARNs `/`, sent as %3A, %2F).
Session credentials add `x-amz-security-token`, signed like the other headers.

The secret key is read here and nowhere else; it is in no returned value, repr or message.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, quote, urlsplit

import msgspec

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_UNRESERVED = "-_.~"
# Headers signing sets itself (a caller's copy would be signed twice or disagree).
_SET_BY_SIGNING = frozenset({"authorization", "host", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"})


class AwsCredentials(msgspec.Struct, frozen=True):
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None
    # Epoch seconds when temporary credentials stop working (None: long-term keys).
    expires_at: float | None = None

    def __repr__(self) -> str:  # never the secret key or the session token
        return f"AwsCredentials(access_key_id={self.access_key_id!r}, expires_at={self.expires_at!r})"


class Signature(msgspec.Struct, frozen=True):
    """What signing produced: the headers to send, and the intermediate steps (for tests)."""

    headers: dict[str, str]
    canonical_request: str
    string_to_sign: str
    signature: str


def amz_date(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def host_header(url: str) -> str:
    """The Host header an HTTP client sends for `url` (the port only when not the scheme's default)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    default = 443 if parts.scheme == "https" else 80
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


@functools.lru_cache(maxsize=512)
def _target(url: str) -> tuple[str, str, str]:
    """(Host header, canonical URI, canonical query) of a URL. A translator signs a handful of URLs
    (one per model and operation) over and over: parsed once each."""
    parts = urlsplit(url)
    return host_header(url), canonical_uri(parts.path), canonical_query(parts.query)


def canonical_uri(path: str) -> str:
    return quote(path or "/", safe="/" + _UNRESERVED)


def canonical_query(query: str) -> str:
    pairs = [
        (quote(k, safe=_UNRESERVED), quote(v, safe=_UNRESERVED)) for k, v in parse_qsl(query, keep_blank_values=True)
    ]
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _canonical_value(value: str) -> str:
    return " ".join(value.split())  # trimmed, inner runs of spaces collapsed


def canonical_request(
    *, method: str, path: str, query: str, headers: Iterable[tuple[str, str]], payload_hash: str, encoded: bool = False
) -> tuple[str, str]:
    """(the canonical request, its signed header names); `encoded`: path and query are canonical already."""
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        merged.setdefault(name.lower().strip(), []).append(_canonical_value(value))
    names = sorted(merged)
    signed = ";".join(names)
    lines = "".join(f"{name}:{','.join(merged[name])}\n" for name in names)
    if not encoded:
        path, query = canonical_uri(path), canonical_query(query)
    request = "\n".join([method.upper(), path, query, lines, signed, payload_hash])
    return request, signed


def credential_scope(date: str, region: str, service: str) -> str:
    return f"{date}/{region}/{service}/aws4_request"


def string_to_sign(*, stamp: str, scope: str, canonical: str) -> str:
    return "\n".join([ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])


def signing_key(secret_access_key: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret_access_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


class Signer:
    """Signs requests for one region and service. The derived key is kept for the day it is
    for (it depends only on the secret and the date), so a request costs two SHA-256 and one HMAC."""

    def __init__(self, *, region: str, service: str, sign_payload_header: bool = True) -> None:
        self.region = region
        self.service = service
        # x-amz-content-sha256: what the AWS SDKs send; the suite's vectors predate it
        self._payload_header = sign_payload_header
        self._key: tuple[str, str, bytes] | None = None  # (secret, date, derived key)

    def _signing_key(self, secret: str, date: str) -> bytes:
        cached = self._key
        if cached is not None and cached[0] == secret and cached[1] == date:
            return cached[2]
        key = signing_key(secret, date, self.region, self.service)
        self._key = (secret, date, key)
        return key

    def sign(
        self, *, method: str, url: str, headers: Mapping[str, str], body: bytes, credentials: AwsCredentials, now: float
    ) -> Signature:
        """The headers to add to `headers` (x-amz-date, x-amz-content-sha256, x-amz-security-token,
        authorization); every header in `headers` is signed, with the Host the client will send."""
        stamp = amz_date(now)
        payload_hash = hashlib.sha256(body).hexdigest()
        added = {"x-amz-date": stamp}
        if self._payload_header:
            added["x-amz-content-sha256"] = payload_hash
        if credentials.session_token:
            added["x-amz-security-token"] = credentials.session_token
        host, path, query = _target(url)
        signed_headers = [(k, v) for k, v in headers.items() if k.lower() not in _SET_BY_SIGNING]
        signed_headers += [("host", host), *added.items()]
        canonical, names = canonical_request(
            method=method, path=path, query=query, headers=signed_headers, payload_hash=payload_hash, encoded=True
        )
        scope = credential_scope(stamp[:8], self.region, self.service)
        to_sign = string_to_sign(stamp=stamp, scope=scope, canonical=canonical)
        key = self._signing_key(credentials.secret_access_key, stamp[:8])
        hex_signature = hmac.digest(key, to_sign.encode(), "sha256").hex()
        added["authorization"] = (
            f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, SignedHeaders={names}, "
            f"Signature={hex_signature}"
        )
        return Signature(headers=added, canonical_request=canonical, string_to_sign=to_sign, signature=hex_signature)
