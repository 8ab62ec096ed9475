"""Checks shared by the snapshot and the controller's API models: whatever a sidecar would refuse,
the controller refuses first, per object, with the same reason and message."""

from __future__ import annotations

import base64
import binascii
import json
import re
import re._constants as _sre  # type: ignore[import-not-found]  # (typeshed stubs only the deprecated sre_*)
import re._parser as _sre_parse  # type: ignore[import-not-found]
from typing import Any, Literal
from urllib.parse import urlsplit

# Whatever a sidecar would refuse in a snapshot, the controller must refuse first, per
# object, with the same code: these checks run in the snapshot's structs and in the
# controller's API models, so a bad object is marked Accepted=False with a reason
# instead of reaching sidecars and costing every other object in the snapshot.


class ConfigProblem(ValueError):
    """A value no sidecar can run on; `reason` is the condition reason the controller reports."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


_ECHO = 100  # what an error quotes of a bad value: enough to recognise it, never a whole blob


def shown(value: str) -> str:
    """A value for an error message: repr, cut to a readable length."""
    return repr(value if len(value) <= _ECHO else value[:_ECHO] + "...")


def check_base_url(url: str) -> str:
    """An http(s) URL the provider client can call: host, port 1-65535, no credentials, no
    query or fragment (the client appends API paths to it). Raises ConfigProblem."""
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ConfigProblem("InvalidURL", f"baseURL {shown(url.strip())} holds whitespace or control characters")
    if not url.isascii():  # the request line and Host header are ASCII
        raise ConfigProblem(
            "InvalidURL",
            f"baseURL {shown(url)} is not ASCII: write an international host name "
            "in its xn-- form and percent-encode the path",
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535", a port that is not a number
        raise ConfigProblem(
            "InvalidURL", f"baseURL {shown(_without_userinfo(url))} is not a usable URL: {exc}"
        ) from None
    where = shown(_without_userinfo(url))
    if parts.scheme not in ("http", "https"):
        raise ConfigProblem("InvalidURL", f"baseURL {where} must start with http:// or https://")
    if "@" in parts.netloc:
        raise ConfigProblem(
            "InvalidURL",
            f"baseURL {where} must not carry credentials: put the key in a Secret (ModelProvider spec.credentialsRef)",
        )
    if not parts.hostname:
        raise ConfigProblem("InvalidURL", f"baseURL {where} has no host")
    if port == 0:
        raise ConfigProblem("InvalidURL", f"baseURL {where} has port 0: use 1-65535, or leave it out")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigProblem(
            "InvalidURL",
            f"baseURL {where} must not have a query or fragment: API paths are "
            "appended to it (Azure's api-version has its own field)",
        )
    return url


def _without_userinfo(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "<credentials>@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{path}"


def check_regex(regex: str) -> str:
    """A header regex that compiles. Raises ConfigProblem."""
    try:
        re.compile(regex)
    except re.error as exc:
        raise ConfigProblem("InvalidRegex", f"regex {shown(regex)} does not compile: {exc}") from None
    return regex


def check_service_account_key(text: str) -> dict[str, Any]:
    """A Google service-account key (JSON) the sidecar can sign with: a `service_account` object with
    `client_email`, `private_key` and an http(s) `token_uri` (if any). Returns the parsed object;
    raises ConfigProblem saying what is wrong and quoting none of it."""
    try:
        data = json.loads(text)
    except ValueError:
        raise ConfigProblem("InvalidSecret", "the service-account key is not JSON") from None
    if not isinstance(data, dict):
        raise ConfigProblem("InvalidSecret", "the service-account key is not a JSON object")
    if data.get("type", "service_account") != "service_account":
        raise ConfigProblem("InvalidSecret", "the service-account key's type is not service_account")
    email, private_key = data.get("client_email"), data.get("private_key")
    if not isinstance(email, str) or not email or not isinstance(private_key, str) or "PRIVATE KEY" not in private_key:
        raise ConfigProblem("InvalidSecret", "the service-account key has no client_email or PEM private_key")
    token_uri = data.get("token_uri")
    if token_uri is not None and not (isinstance(token_uri, str) and token_uri.startswith(("https://", "http://"))):
        raise ConfigProblem("InvalidSecret", "the service-account key's token_uri is not an http(s) URL")
    return data


# The personal-data scan's kinds (`proxy.policy.personal_data.ALL_KINDS`; a unit test keeps them in step).
RedactionKind = Literal["email", "phone", "payment_card", "iban", "us_ssn", "uk_nino", "es_dni"]
REDACTION_KINDS: tuple[RedactionKind, ...] = ("email", "phone", "payment_card", "iban", "us_ssn", "uk_nino", "es_dni")
REDACTION_NAME = r"^[a-z][a-z0-9_]{0,39}$"  # a custom pattern's name: its placeholder's label
REDACTION_REGEX_MAX = 1000
_UNBOUNDED = 50  # a repeat allowing more than this many is as good as unbounded for backtracking


def check_redaction_regex(name: str, regex: str) -> str:
    """A custom redaction pattern the sidecar can run on every request's text: it compiles (Python
    `re`), matches something, and has no repetition nested in an unbounded repetition (`(a+)+`,
    `(\\w*\\s?)*`), the shape whose backtracking takes exponential time on a text that almost
    matches. Raises ConfigProblem naming the pattern."""
    if len(regex) > REDACTION_REGEX_MAX:
        raise ConfigProblem("InvalidRegex", f"redact pattern {name!r}: longer than {REDACTION_REGEX_MAX} characters")
    try:
        compiled = re.compile(regex)
    except re.error as exc:
        raise ConfigProblem(
            "InvalidRegex", f"redact pattern {name!r}: {shown(regex)} does not compile: {exc}"
        ) from None
    if compiled.match("") is not None:
        raise ConfigProblem(
            "InvalidRegex", f"redact pattern {name!r}: {shown(regex)} matches the empty string; it must match something"
        )
    if _nested_repeat(_sre_parse.parse(regex), inside_unbounded=False):
        raise ConfigProblem(
            "InvalidRegex",
            f"redact pattern {name!r}: {shown(regex)} repeats a repetition (like (a+)+), which can take "
            "exponential time on a text that almost matches; bound the inner or the outer repetition, "
            "or make the inner one possessive (a++)",
        )
    return regex


def _nested_repeat(parsed: Any, *, inside_unbounded: bool) -> bool:
    """Whether a variable-length repetition sits inside an unbounded one (ReDoS's classic shape)."""
    for op, argument in parsed:
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT):
            low, high, body = argument
            if op is _sre.POSSESSIVE_REPEAT:  # never backtracks into its body
                continue
            if inside_unbounded and high != low:
                return True
            unbounded = high is _sre.MAXREPEAT or high > _UNBOUNDED
            if _nested_repeat(body, inside_unbounded=inside_unbounded or unbounded):
                return True
        elif op is _sre.SUBPATTERN:
            if _nested_repeat(argument[-1], inside_unbounded=inside_unbounded):
                return True
        elif op is _sre.BRANCH:
            if any(_nested_repeat(branch, inside_unbounded=inside_unbounded) for branch in argument[1]):
                return True
        elif op in (_sre.ASSERT, _sre.ASSERT_NOT):
            if _nested_repeat(argument[1], inside_unbounded=inside_unbounded):
                return True
        elif op is _sre.ATOMIC_GROUP:
            continue
    return False


# --- guardrails ----------------------------------------------------------------------

GuardrailKind = Literal["modelway", "openai-moderation"]
GuardrailPhase = Literal["request", "response"]
GUARDRAIL_KINDS: tuple[GuardrailKind, ...] = ("modelway", "openai-moderation")
GUARDRAIL_TIMEOUT_MS_MAX = 10_000  # a guardrail is on the request path: its bound on added latency
GUARDRAIL_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def check_guardrail_url(url: str) -> str:
    """The guardrail's endpoint: what `check_base_url` accepts (http(s), a host, no credentials, no
    query), said of a guardrail. Raises ConfigProblem."""
    try:
        return check_base_url(url)
    except ConfigProblem as problem:
        raise ConfigProblem(problem.reason, str(problem).replace("baseURL", "guardrail url", 1)) from None


CA_BUNDLE_MAX = 256 * 1024  # a few dozen certificates; a whole system store is not meant here
_PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", re.DOTALL)


def check_ca_bundle(pem: str) -> int:
    """PEM CA certificates a provider's TLS certificate must chain to; returns how many. Checked for
    shape here (base64 of a DER certificate); the sidecar's TLS library reads them. Raises
    ConfigProblem saying what is wrong, quoting none of it."""
    if len(pem) > CA_BUNDLE_MAX:
        raise ConfigProblem("InvalidCABundle", f"caBundle is larger than {CA_BUNDLE_MAX} characters")
    if "PRIVATE KEY-----" in pem:
        raise ConfigProblem("InvalidCABundle", "caBundle holds a private key: give the CA certificates only")
    blocks = _PEM_CERTIFICATE.findall(pem)
    if not blocks:
        raise ConfigProblem("InvalidCABundle", "caBundle holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    for number, block in enumerate(blocks, 1):
        try:
            der = base64.b64decode("".join(block.split()), validate=True)
        except (binascii.Error, ValueError):
            der = b""
        if not _is_der_sequence(der):
            raise ConfigProblem("InvalidCABundle", f"caBundle certificate {number} is not valid PEM (base64 of DER)")
    return len(blocks)


def _is_der_sequence(der: bytes) -> bool:
    """A DER SEQUENCE (an X.509 certificate's outer shape) whose length is the whole of `der`."""
    if len(der) < 2 or der[0] != 0x30:
        return False
    first = der[1]
    if first < 0x80:
        return first + 2 == len(der)
    size = first & 0x7F
    if size == 0 or size > 4 or len(der) < 2 + size:
        return False
    return int.from_bytes(der[2 : 2 + size], "big") + 2 + size == len(der)
