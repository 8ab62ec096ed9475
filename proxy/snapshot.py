"""The contract between controller and sidecar: the compiled config a sidecar runs on.

Pure data (pydantic, frozen, no I/O). The controller produces it, the sidecar
validates and runs it; nothing here knows about Kubernetes. Field names are
camelCase on the wire (as in the CRDs) and snake_case in Python.
"""

from __future__ import annotations

import hashlib
import json
import re
import re._constants as _sre  # type: ignore[import-not-found]  # (typeshed stubs only the deprecated sre_*)
import re._parser as _sre_parse  # type: ignore[import-not-found]
from collections.abc import Iterable
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.alias_generators import to_camel

from shared.provider_types import ProviderType

Hosting = Literal["saas", "vpc", "in-cluster"]
BedrockApi = Literal["converse", "anthropic-messages"]
VertexPublisher = Literal["google", "anthropic"]
RetryOn = Literal["connect-error", "timeout", "429", "5xx"]
DataClass = Literal["public", "internal", "personal", "restricted"]

# Least to most sensitive: a request's class may be raised along this order, never lowered
# below its workload's default, and a residency rule for one class binds every class above it.
DATA_CLASSES: tuple[DataClass, ...] = ("public", "internal", "personal", "restricted")
DATA_CLASS_RANK: dict[str, int] = {name: rank for rank, name in enumerate(DATA_CLASSES)}
DATA_CLASS_HEADER = "x-modelway-data-class"

_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


# --- checks shared with the controller ------------------------------------------------
#
# Whatever a sidecar would refuse in a snapshot, the controller must refuse first, per
# object, with the same code: these checks run in the snapshot's validators below and in
# the controller's API models, so a bad object is marked Accepted=False with a reason
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


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)


class ModelPricing(_Frozen):
    """USD per million tokens, used for the cost attribute on spans."""

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)
    # Input tokens read from the provider's prompt cache; None: they cost the input price.
    cached_input_per_million: float | None = Field(default=None, ge=0)
    # Input tokens written to the provider's prompt cache; None: they cost the input price.
    cache_write_per_million: float | None = Field(default=None, ge=0)


# --- limits and capacity (enforced by proxy/limits) ---------------------------------------

LimitScope = Literal["workload", "namespace", "policy"]
BudgetAction = Literal["refuse", "reroute"]
FailureMode = Literal["open", "closed"]
_COUNT = Annotated[int, Field(ge=1, le=1_000_000_000_000)]
_USD = Annotated[float, Field(ge=0, le=1_000_000_000)]
_GLOBS = tuple[Annotated[str, Field(min_length=1)], ...]


class Capacity(_Frozen):
    """A provider account's own quota for the models matching `model` (a glob), shared by every sidecar."""

    key: Annotated[str, Field(min_length=1)]  # "ModelProvider/<namespace>/<name>/capacity/<model glob>"
    model: Annotated[str, Field(min_length=1)]
    requests_per_minute: _COUNT | None = None
    tokens_per_minute: _COUNT | None = None

    @model_validator(mode="after")
    def _says_something(self) -> Capacity:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValueError(f"capacity {self.key!r}: needs requestsPerMinute or tokensPerMinute")
        return self


class RerouteBackend(_Frozen):
    provider: Annotated[str, Field(min_length=1)]  # a compiled provider name, "<namespace>.<name>"
    model: Annotated[str, Field(min_length=1)]


class Limit(_Frozen):
    """One limit of one policy, compiled for this workload: its counter key names what is counted together.

    The key carries the scope value (`.../workload/<ns>/<sa>`, `.../namespace/<ns>` or `.../policy`), so
    sidecars of the same scope share one counter and others do not; the sidecar never works it out."""

    policy: str  # "ModelPolicy team-a/caps" or "ClusterModelPolicy org-caps", as in Denial.policy
    name: Annotated[str, Field(min_length=1)]
    key: Annotated[str, Field(min_length=1)]
    routes: _GLOBS | None = None  # ModelRoute names; None: every route
    providers: _GLOBS | None = None  # ModelProvider names; None: every provider
    models: _GLOBS | None = None  # upstream model names; None: every model
    requests_per_minute: _COUNT | None = None
    tokens_per_minute: _COUNT | None = None  # input and output together
    input_tokens_per_minute: _COUNT | None = None
    output_tokens_per_minute: _COUNT | None = None
    concurrent_requests: _COUNT | None = None
    usd_per_day: _USD | None = None  # UTC days
    usd_per_month: _USD | None = None  # UTC calendar months
    on_budget_spent: BudgetAction = "refuse"
    reroute_to: tuple[RerouteBackend, ...] = ()
    failure_mode: FailureMode = "open"

    @property
    def has_budget(self) -> bool:
        return self.usd_per_day is not None or self.usd_per_month is not None

    @model_validator(mode="after")
    def _consistent(self) -> Limit:
        numbers = (
            self.requests_per_minute,
            self.tokens_per_minute,
            self.input_tokens_per_minute,
            self.output_tokens_per_minute,
            self.concurrent_requests,
            self.usd_per_day,
            self.usd_per_month,
        )
        if all(n is None for n in numbers):
            raise ValueError(f"limit {self.name!r} of {self.policy}: sets no limit")
        if self.on_budget_spent == "reroute" and not self.reroute_to:
            raise ValueError(f"limit {self.name!r} of {self.policy}: onBudgetSpent reroute needs rerouteTo")
        return self


class AwsKeys(_Frozen):
    """An AWS access key (and the session token of temporary ones), from the provider's Secret."""

    access_key_id: SecretStr
    secret_access_key: SecretStr
    session_token: SecretStr | None = None


class BedrockSettings(_Frozen):
    # The AWS region requests are signed for (and, without a baseURL, sent to).
    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z0-9]+)+-[0-9]+$", max_length=32)]
    # None: a Bedrock API key (the provider's apiKey), or the pod's own AWS identity.
    credentials: AwsKeys | None = None
    # converse: every model, through Converse; anthropic-messages: Anthropic models through
    # InvokeModel with Anthropic's own body.
    api: BedrockApi = "converse"


class VertexSettings(_Frozen):
    """Google Vertex AI: the project and location in every URL, the publisher whose models (and body)
    the provider serves, and a service-account key (JSON) from the provider's Secret or, without
    one, the pod's GKE Workload Identity (the metadata server's tokens)."""

    project: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")]
    region: Annotated[str, Field(pattern=r"^[a-z]+(-[a-z0-9]+)*$", max_length=32)]
    publisher: VertexPublisher = "google"
    service_account_key: SecretStr | None = None

    @field_validator("service_account_key")
    @classmethod
    def _usable_key(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None:
            check_service_account_key(key.get_secret_value())
        return key


class EntraSettings(_Frozen):
    """Azure OpenAI with Microsoft Entra ID access tokens instead of an API key: client credentials
    (the client secret from the provider's Secret), or without a secret the pod's AKS Workload
    Identity (its federated token; tenant and client default to the pod's AZURE_TENANT_ID and
    AZURE_CLIENT_ID)."""

    tenant_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    client_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    client_secret: SecretStr | None = None
    scope: Annotated[str, Field(min_length=1, max_length=512)] = "https://cognitiveservices.azure.com/.default"

    @model_validator(mode="after")
    def _secret_names_its_client(self) -> EntraSettings:
        if self.client_secret is not None and (self.tenant_id is None or self.client_id is None):
            raise ValueError("Entra ID client credentials need tenantId and clientId")
        return self


class Provider(_Frozen):
    name: Annotated[str, Field(pattern=_NAME, max_length=253)]
    type: ProviderType
    base_url: Annotated[str, Field(pattern=r"^https?://")]
    api_key: SecretStr | None = None
    # Azure OpenAI only: the `api-version` query parameter.
    api_version: str | None = None
    # Bedrock only: its signing region and AWS keys.
    bedrock: BedrockSettings | None = None
    # Azure OpenAI only: Microsoft Entra ID tokens instead of apiKey.
    entra: EntraSettings | None = None
    # Vertex only: project, location, publisher, credentials.
    vertex: VertexSettings | None = None
    region: str | None = None
    jurisdiction: str | None = None
    hosting: Hosting = "saas"
    pricing: dict[str, ModelPricing] = Field(default_factory=dict)
    capacity: tuple[Capacity, ...] = ()

    @field_validator("base_url")
    @classmethod
    def _usable_url(cls, url: str) -> str:
        return check_base_url(url)

    @model_validator(mode="after")
    def _azure_needs_version(self) -> Provider:
        if self.type == "azure-openai" and not self.api_version:
            raise ValueError(f"provider {self.name!r}: type azure-openai needs apiVersion")
        if (self.type == "bedrock") != (self.bedrock is not None):
            raise ValueError(f"provider {self.name!r}: bedrock settings are for, and needed by, type bedrock only")
        if (self.type == "vertex") != (self.vertex is not None):
            raise ValueError(f"provider {self.name!r}: vertex settings are for, and needed by, type vertex only")
        if self.entra is not None and self.type != "azure-openai":
            raise ValueError(f"provider {self.name!r}: Entra ID settings are for type azure-openai only")
        return self

    def secrets(self) -> list[str]:
        """Every credential value this provider holds, for the scrubber."""
        values = [self.api_key] if self.api_key is not None else []
        keys = self.bedrock.credentials if self.bedrock is not None else None
        if keys is not None:
            values += [keys.access_key_id, keys.secret_access_key]
            values += [keys.session_token] if keys.session_token is not None else []
        if self.entra is not None and self.entra.client_secret is not None:
            values.append(self.entra.client_secret)
        found = [v.get_secret_value() for v in values]
        if self.vertex is not None and self.vertex.service_account_key is not None:
            key = self.vertex.service_account_key.get_secret_value()
            found.append(key)
            try:  # the private key as a parser or a provider would quote it: with real line breaks
                private = json.loads(key).get("private_key")
            except (ValueError, AttributeError):
                private = None
            if isinstance(private, str):
                found += [line for line in private.splitlines() if len(line) >= 16 and "PRIVATE KEY" not in line]
        return found


class Backend(_Frozen):
    provider: str
    model: Annotated[str, Field(min_length=1)]
    weight: Annotated[int, Field(ge=0)] = 1

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"


class HeaderMatch(_Frozen):
    """Matches when the header is present and, if given, equals `value` or matches `regex`."""

    name: Annotated[str, Field(min_length=1)]
    value: str | None = None
    regex: str | None = None

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, regex: str | None) -> str | None:
        return regex if regex is None else check_regex(regex)


class Retry(_Frozen):
    # Attempts per backend, the first one included.
    attempts: Annotated[int, Field(ge=1, le=10)] = 2
    retry_on: tuple[RetryOn, ...] = ("connect-error", "timeout", "429", "5xx")
    backoff_base_seconds: Annotated[float, Field(ge=0)] = 0.1
    backoff_max_seconds: Annotated[float, Field(ge=0)] = 2.0
    # A Retry-After longer than this is not waited for: the next backend is tried instead.
    max_retry_after_seconds: Annotated[float, Field(ge=0)] = 5.0


class Timeouts(_Frozen):
    # The whole request, all attempts included.
    total_seconds: Annotated[float, Field(gt=0)] = 120.0
    # Streams only: from sending the request to the first content event.
    first_token_seconds: Annotated[float, Field(gt=0)] | None = None
    connect_seconds: Annotated[float, Field(gt=0)] = 5.0


class Arm(_Frozen):
    """One arm of an experiment: its share of the rule's requests and the backends that serve it."""

    name: Annotated[str, Field(min_length=1, max_length=63)]
    weight: Annotated[int, Field(ge=0)] = 1
    backends: Annotated[tuple[Backend, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _weights(self) -> Arm:
        if not any(b.weight > 0 for b in self.backends):
            raise ValueError(f"arm {self.name!r}: at least one backend needs a weight above 0")
        return self


class Experiment(_Frozen):
    """A rule's traffic split into arms (the first is the control), each counted apart.

    `name` identifies the experiment to the controller ("<namespace>/<route>/<rule>"); with
    `sticky_header`, a request carrying that header goes to the arm its value hashes to (the
    same on every sidecar), others by weight."""

    name: Annotated[str, Field(min_length=1, max_length=400)]
    arms: Annotated[tuple[Arm, ...], Field(min_length=2, max_length=16)]
    sticky_header: Annotated[str, Field(min_length=1, max_length=256)] | None = None

    @model_validator(mode="after")
    def _arms(self) -> Experiment:
        names = [a.name for a in self.arms]
        if len(names) != len(set(names)):
            raise ValueError(f"experiment {self.name!r}: arm names must be unique, got {names}")
        if not any(a.weight > 0 for a in self.arms):
            raise ValueError(f"experiment {self.name!r}: at least one arm needs a weight above 0")
        return self


class Rule(_Frozen):
    name: Annotated[str, Field(min_length=1)] = "default"
    match_headers: tuple[HeaderMatch, ...] = ()
    # With an experiment: every arm's backends (what policy and provider references see); each
    # request uses only its arm's.
    backends: Annotated[tuple[Backend, ...], Field(min_length=1)]
    fallbacks: tuple[Backend, ...] = ()
    retry: Retry = Retry()
    timeouts: Timeouts = Timeouts()
    experiment: Experiment | None = None

    @model_validator(mode="after")
    def _weights(self) -> Rule:
        if not any(b.weight > 0 for b in self.backends):
            raise ValueError(f"rule {self.name!r}: at least one backend needs a weight above 0")
        if self.experiment is not None:
            keys = {b.key for b in self.backends}
            for arm in self.experiment.arms:
                missing = [b.key for b in arm.backends if b.key not in keys]
                if missing:
                    raise ValueError(f"rule {self.name!r}: arm {arm.name!r} backends {missing} are not rule backends")
        return self


class Route(_Frozen):
    """What apps call: the `model` name they send, and how it is served."""

    name: Annotated[str, Field(min_length=1)]
    model: Annotated[str, Field(min_length=1)]
    rules: Annotated[tuple[Rule, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_rule_names(self) -> Route:
        names = [r.name for r in self.rules]
        if len(names) != len(set(names)):
            raise ValueError(f"route {self.name!r}: rule names must be unique, got {names}")
        return self


class Denial(_Frozen):
    """Why something is out of this workload's reach: which policy says so, and in what words."""

    policy: str  # "ModelPolicy team-a/eu-only" or "ClusterModelPolicy org-baseline"
    reason: str


class RouteDenial(_Frozen):
    model: str  # the route's model name: requests for it are refused
    denial: Denial


class BackendDenial(_Frozen):
    provider: str
    model: str  # the upstream model
    data_classes: Annotated[tuple[DataClass, ...], Field(min_length=1)]  # the classes it may not carry
    denial: Denial

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"


class RedactionPattern(_Frozen):
    name: Annotated[str, Field(pattern=REDACTION_NAME)]
    regex: Annotated[str, Field(min_length=1, max_length=REDACTION_REGEX_MAX)]

    @model_validator(mode="after")
    def _usable(self) -> RedactionPattern:
        if self.name in REDACTION_KINDS:
            raise ValueError(f"redact pattern name {self.name!r} is a built-in kind; choose another name")
        check_redaction_regex(self.name, self.regex)
        return self


class Redaction(_Frozen):
    """What is masked before a request goes to a backend a residency rule would otherwise deny."""

    kinds: tuple[RedactionKind, ...] | None = None  # None: every built-in kind; (): custom patterns only
    patterns: tuple[RedactionPattern, ...] = ()
    restore: bool = True  # False: the app gets the placeholders, never the values

    @model_validator(mode="after")
    def _unique_names(self) -> Redaction:
        names = [p.name for p in self.patterns]
        if len(names) != len(set(names)):
            raise ValueError(f"redact pattern names must be unique, got {names}")
        if self.kinds == () and not self.patterns:
            raise ValueError("redact masks nothing: give kinds or patterns")
        return self


class BackendRedaction(_Frozen):
    """A backend that data of some classes may reach only masked (instead of being denied it)."""

    provider: str
    model: str  # the upstream model
    data_classes: Annotated[tuple[DataClass, ...], Field(min_length=1)]
    policy: str  # "ModelPolicy team-a/eu-only", as in Denial.policy
    redaction: Redaction

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"


def merge_redactions(redactions: Iterable[Redaction]) -> Redaction:
    """The strictest of several redactions of one backend: every kind and pattern any of them masks
    (two patterns of one name mask what either matches), restored only if all of them restore."""
    kinds: set[str] | None = set()
    patterns: dict[str, str] = {}
    restore = True
    for redaction in redactions:
        if redaction.kinds is None:
            kinds = None
        elif kinds is not None:
            kinds.update(redaction.kinds)
        for pattern in redaction.patterns:
            known = patterns.get(pattern.name)
            patterns[pattern.name] = (
                pattern.regex if known in (None, pattern.regex) else f"(?:{known})|(?:{pattern.regex})"
            )
        restore = restore and redaction.restore
    return Redaction.model_validate(
        {
            "kinds": None if kinds is None else tuple(k for k in REDACTION_KINDS if k in kinds),
            "patterns": tuple({"name": name, "regex": regex} for name, regex in patterns.items()),
            "restore": restore,
        }
    )


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


class Guardrail(_Frozen):
    """An HTTP service a policy asks about a request's text before it goes out, and about its answer.

    `kind: modelway`: POST {phase, texts, model, route, workload} -> {decision: allow|deny|replace,
    reason, texts}; `kind: openai-moderation`: POST {input: texts} -> {results: [{flagged, categories}]}
    (OpenAI's /v1/moderations), any flagged result a deny. Answered late or not at all, `failure_mode`
    decides: open lets the request on, closed refuses it (503).
    """

    name: Annotated[str, Field(pattern=GUARDRAIL_NAME, max_length=63)]
    policy: str = ""  # the policy that names it, for the audit log
    url: Annotated[str, Field(max_length=2048)]
    kind: GuardrailKind = "modelway"
    phases: Annotated[tuple[GuardrailPhase, ...], Field(min_length=1, max_length=2)] = ("request", "response")
    timeout_ms: Annotated[int, Field(ge=1, le=GUARDRAIL_TIMEOUT_MS_MAX)] = 500
    failure_mode: Literal["open", "closed"] = "closed"
    data_classes: tuple[DataClass, ...] | None = None  # None: every class
    routes: tuple[Annotated[str, Field(min_length=1, max_length=253)], ...] | None = None  # globs; None: all
    # Streams: a check when this many new characters arrived (or a sentence ended past a quarter of it),
    # on the last `stream_window_chars` already checked plus the new ones.
    stream_check_chars: Annotated[int, Field(ge=16, le=65_536)] = 400
    stream_window_chars: Annotated[int, Field(ge=0, le=65_536)] = 800

    @field_validator("url")
    @classmethod
    def _usable_url(cls, url: str) -> str:
        return check_guardrail_url(url)


class Policy(_Frozen):
    """What the workload's ModelPolicies allow it, compiled by the controller for this workload.

    The sidecar never evaluates policies itself: it classifies each request, then
    drops the backends denied for that class. The empty default allows everything.
    """

    workload: str = ""  # "<namespace>/<serviceaccount>", as the controller verified it
    policies: tuple[str, ...] = ()  # the policies that apply, for the audit log
    default_class: DataClass = "internal"  # the floor: a request may raise its class, never go below
    detect_personal_data: bool = False  # raise requests whose prompt holds personal data to `personal`
    denied_routes: tuple[RouteDenial, ...] = ()
    denied_backends: tuple[BackendDenial, ...] = ()
    # Backends some classes may reach only masked; a denial of the same backend and class wins.
    redacted_backends: tuple[BackendRedaction, ...] = ()
    # Every limit of every policy that binds the workload; a request must pass all that bind it.
    limits: tuple[Limit, ...] = ()
    # Every guardrail of every policy that binds the workload, in the policies' order.
    guardrails: tuple[Guardrail, ...] = ()

    @model_validator(mode="after")
    def _unique_limit_keys(self) -> Policy:
        keys = [limit.key for limit in self.limits]
        if len(keys) != len(set(keys)):
            raise ValueError("limit keys must be unique")
        return self


class LimitStore(_Frozen):
    """Where the limit counters live when every sidecar shares them (Redis); the controller sends it
    with the snapshot, so one Secret in the controller's namespace reaches every pod."""

    # redis://, rediss://, unix://, or redis+sentinel://host:26379[,host:26379]/service[/db]; may carry a password.
    url: SecretStr
    cluster: bool = False  # speak Redis Cluster to the URL's node
    timeout_seconds: Annotated[float, Field(gt=0, le=5)] = 0.1
    key_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "modelway"


class Snapshot(_Frozen):
    """Everything one sidecar needs. `version` is a content hash (see `content_version`)."""

    version: str = ""
    providers: tuple[Provider, ...] = ()
    routes: tuple[Route, ...] = ()
    policy: Policy = Policy()
    # None: the sidecar's own `--limits-redis-url`, else counters in the sidecar's memory.
    limit_store: LimitStore | None = None

    @model_validator(mode="after")
    def _references(self) -> Snapshot:
        providers = {p.name for p in self.providers}
        if len(providers) != len(self.providers):
            raise ValueError("provider names must be unique")
        models = [r.model for r in self.routes]
        if len(models) != len(set(models)):
            dupes = sorted({m for m in models if models.count(m) > 1})
            raise ValueError(f"more than one route serves model(s) {dupes}")
        for route in self.routes:
            for rule in route.rules:
                for backend in (*rule.backends, *rule.fallbacks):
                    if backend.provider not in providers:
                        raise ValueError(
                            f"route {route.name!r} rule {rule.name!r}: unknown provider "
                            f"{backend.provider!r} (known: {sorted(providers)})"
                        )
        return self

    def masked(self) -> dict[str, Any]:
        """The snapshot as JSON-ready data with every credential replaced by a marker."""
        data = self.model_dump(mode="json", by_alias=True)
        for provider in data["providers"]:
            if provider.get("apiKey") is not None:
                provider["apiKey"] = "<redacted>"
            keys: dict[str, Any] = (provider.get("bedrock") or {}).get("credentials") or {}
            for field, value in keys.items():
                if value is not None:
                    keys[field] = "<redacted>"
            entra: dict[str, Any] = provider.get("entra") or {}
            if entra.get("clientSecret") is not None:
                entra["clientSecret"] = "<redacted>"
            vertex: dict[str, Any] = provider.get("vertex") or {}
            if vertex.get("serviceAccountKey") is not None:
                vertex["serviceAccountKey"] = "<redacted>"
        if data.get("limitStore") is not None:
            data["limitStore"]["url"] = "<redacted>"
        return data


def to_wire(snapshot: Snapshot, *, exclude_version: bool = False) -> dict[str, Any]:
    """The snapshot as JSON-ready data WITH credentials: for the controller stream and the
    sidecar's saved copy only, never for logs or dumps (use `masked`)."""
    data = snapshot.model_dump(mode="json", by_alias=True, exclude={"version"} if exclude_version else None)
    for provider, original in zip(data["providers"], snapshot.providers, strict=True):
        if original.api_key is not None:
            provider["apiKey"] = original.api_key.get_secret_value()
        keys = original.bedrock.credentials if original.bedrock is not None else None
        if keys is not None:
            provider["bedrock"]["credentials"] = {
                "accessKeyId": keys.access_key_id.get_secret_value(),
                "secretAccessKey": keys.secret_access_key.get_secret_value(),
                "sessionToken": keys.session_token.get_secret_value() if keys.session_token is not None else None,
            }
        if original.entra is not None and original.entra.client_secret is not None:
            provider["entra"]["clientSecret"] = original.entra.client_secret.get_secret_value()
        if original.vertex is not None and original.vertex.service_account_key is not None:
            provider["vertex"]["serviceAccountKey"] = original.vertex.service_account_key.get_secret_value()
    if snapshot.limit_store is not None:
        data["limitStore"]["url"] = snapshot.limit_store.url.get_secret_value()
    return data


def content_version(snapshot: Snapshot) -> str:
    """A stable hash of the snapshot's content (credentials included, so rotation is a change)."""
    blob = json.dumps(to_wire(snapshot, exclude_version=True), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def parse_snapshot(data: dict[str, Any]) -> Snapshot:
    """Validate raw data into a Snapshot, filling in the content version when absent."""
    snapshot = Snapshot.model_validate(data)
    if not snapshot.version:
        snapshot = snapshot.model_copy(update={"version": content_version(snapshot)})
    return snapshot


# --- the controller <-> sidecar stream (a WebSocket; JSON text messages) ------------------
#
# sidecar -> controller, first:  {"type": "hello", "version": "<what it runs, or ''>"}
# controller -> sidecar:         {"type": "snapshot", "version": v, "snapshot": to_wire(...)}
# sidecar -> controller:         {"type": "ack", "version": v}
#                                {"type": "nack", "version": v, "error": "<why; no secrets>"}
#                                {"type": "counts", "sidecar": "<its id>", "started": <unix s>,
#                                 "experiments": {"<experiment name>": {"<arm>": ArmStats.to_dict()}}}
# A counts message carries the sidecar's running totals since it started (never deltas), so the
# controller keeps the latest per (sidecar, started) and a resend or a reconnect counts nothing twice.
# Bounded: at most COUNTS_MAX_EXPERIMENTS experiments of at most 16 arms, in a message of at most
# COUNTS_MAX_BYTES; every few seconds while something was counted.
# The sidecar authenticates with `Authorization: Bearer <projected ServiceAccount token>`
# (audience `modelway`); it only ever receives what its workload may see.

STREAM_PATH = "/v1/stream"
COUNTS_MAX_EXPERIMENTS = 256
COUNTS_MAX_BYTES = 256 * 1024
TOKEN_AUDIENCE = "modelway"
