"""What every Bedrock Runtime call shares, whichever body it carries (Converse, or a model's own
body through InvokeModel): the URL, the credentials and the SigV4 signature, AWS's error answers,
and the exception messages a response stream may carry.

- URL: `{base}/model/{modelId}/{operation}`, the model id percent-encoded whole (ids carry `:`,
  inference-profile ARNs `/`).
- Credentials, in order: the provider's AWS keys (Secret), its Bedrock API key (a bearer token),
  the pod's own identity (web identity, `proxy.auth.web_identity`); with none (or none yet),
  nothing is sent: the attempt fails as `CredentialsUnavailable`, naming the provider. Signed at
  each request, with the translator's clock, once the body is final.
- Errors: `{"message": ...}` (or `Message`), the exception's name in `x-amzn-errortype`, with the
  status AWS documents for it; in a stream, `:message-type: exception` messages named by
  `:exception-type`, classed by the status AWS gives the same exception (`BedrockStreamException`).

`BedrockTranslatorBase` holds what the two Bedrock translators (Converse, `proxy.providers.bedrock`;
InvokeModel with Anthropic's body, `proxy.providers.bedrock_anthropic`) share: this endpoint, their
span and metric labels, and reading AWS's error answers.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import orjson

from proxy.auth.aws_credentials import AwsCredentialSource, StaticCredentials
from proxy.auth.sigv4 import AwsCredentials, Signer
from proxy.providers import checks
from proxy.providers.aws_eventstream import EventMessage
from proxy.providers.base import (
    CredentialsUnavailable,
    UpstreamErrorEvent,
    UpstreamProtocolError,
    UpstreamRequest,
    json_body,
)
from proxy.providers.openai import body_excerpt, load_json_object, server_of
from proxy.snapshot import Provider

SERVICE = "bedrock"  # the SigV4 signing name of bedrock-runtime
EVENT_STREAM = "application/vnd.amazon.eventstream"
JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}
STREAM_HEADERS = {"content-type": "application/json", "accept": EVENT_STREAM}

#: Exception types in a stream -> the HTTP status AWS gives the same exception as an answer.
EXCEPTION_STATUS = {
    "throttlingException": 429,
    "serviceUnavailableException": 503,
    "internalServerException": 500,
    "modelStreamErrorException": 424,
    "validationException": 400,
    "modelTimeoutException": 408,
}


#: What a Converse request's CountTokens input takes (ConverseTokensRequest: no inferenceConfig).
_CONVERSE_COUNTED = frozenset({"messages", "system", "toolConfig", "additionalModelRequestFields"})


def converse_count_body(converse: dict[str, Any]) -> bytes:
    """CountTokens' body for the Converse request `converse`."""
    counted = {key: value for key, value in converse.items() if key in _CONVERSE_COUNTED}
    return json_body({"input": {"converse": counted}})


def invoke_count_body(invoke: bytes) -> bytes:
    """CountTokens' body for an InvokeModel request whose body is `invoke` (a blob: base64 in JSON)."""
    return json_body({"input": {"invokeModel": {"body": base64.b64encode(invoke).decode()}}})


def count_tokens_answer(body: bytes) -> int:
    """CountTokens' answer, `{"inputTokens": N}`."""
    counted = checks.count(load_json_object(body, "CountTokens answer").get("inputTokens"), "inputTokens")
    if counted is None:
        raise UpstreamProtocolError("CountTokens answer has no inputTokens")
    return counted


class BedrockStreamException(UpstreamErrorEvent):
    """An exception message inside a Bedrock stream; `status` is what AWS answers it with as HTTP."""

    def __init__(self, exception_type: str, message: str) -> None:
        status = EXCEPTION_STATUS.get(exception_type, 502)
        super().__init__(f"provider sent {exception_type} mid-stream: {message}", status=status)
        self.exception_type = exception_type


def bedrock_error_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except ValueError:
        return body_excerpt(body)
    if not isinstance(data, dict):
        return body_excerpt(body)
    message = data.get("message", data.get("Message"))
    return checks.message_text(message) if isinstance(message, str) else body_excerpt(body)


def event_type(message: EventMessage) -> str | None:
    """The `:event-type` of an event message; raises for exception and error messages."""
    kind = message.header(":message-type")
    if kind == "exception":
        exception = message.header(":exception-type") or "exception"
        raise BedrockStreamException(exception, bedrock_error_message(message.payload))
    if kind == "error":
        code = message.header(":error-code") or "error"
        raise BedrockStreamException(code, checks.message_text(message.header(":error-message")))
    if kind != "event":
        raise UpstreamProtocolError(f"stream message has an unknown :message-type {checks.message_text(kind)}")
    return message.header(":event-type")


NO_AWS_CREDENTIALS = (
    "no AWS credentials: the provider's Secret has no keys or API key, and the sidecar no pod identity "
    "(AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE, or EKS Pod Identity)"
)


def credential_source(provider: Provider) -> AwsCredentialSource | None:
    """Static keys from the provider's Secret; None when it has none (a bearer API key, or unsigned)."""
    settings = provider.bedrock
    if settings is None or settings.credentials is None:
        return None
    keys = settings.credentials
    return StaticCredentials(
        AwsCredentials(
            access_key_id=keys.access_key_id.get_secret_value(),
            secret_access_key=keys.secret_access_key.get_secret_value(),
            session_token=keys.session_token.get_secret_value() if keys.session_token is not None else None,
        )
    )


class BedrockEndpoint:
    """One provider's Bedrock Runtime endpoint: builds and signs the upstream requests."""

    def __init__(
        self,
        provider: Provider,
        *,
        pod_identity: AwsCredentialSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.server_address, self.server_port = server_of(provider.base_url)
        self._base = provider.base_url.rstrip("/") + "/model/"
        self._name = provider.name
        region = provider.bedrock.region if provider.bedrock is not None else provider.region or "us-east-1"
        self._signer = Signer(region=region, service=SERVICE)
        self._bearer = (
            {"authorization": "Bearer " + provider.api_key.get_secret_value()} if provider.api_key is not None else {}
        )
        self._credentials = credential_source(provider) or (None if self._bearer else pod_identity)
        self._clock = clock

    def url(self, model: str, operation: str) -> str:
        return f"{self._base}{quote(model, safe='')}/{operation}"

    def request(self, model: str, operation: str, body: bytes, *, stream: bool) -> UpstreamRequest:
        url = self.url(model, operation)
        headers = dict(STREAM_HEADERS if stream else JSON_HEADERS)
        credentials = self._credentials.credentials() if self._credentials is not None else None
        if credentials is None:
            # nothing sent unsigned: Bedrock's 403 would read as a refused key
            if self._credentials is not None:
                raise CredentialsUnavailable(f"provider {self._name!r}: {self._credentials.missing()}")
            if not self._bearer:
                raise CredentialsUnavailable(f"provider {self._name!r}: {NO_AWS_CREDENTIALS}")
            headers.update(self._bearer)
        else:
            signature = self._signer.sign(
                method="POST", url=url, headers=headers, body=body, credentials=credentials, now=self._clock()
            )
            headers.update(signature.headers)
        return UpstreamRequest(url=url, headers=headers, body=body, stream=stream)


class BedrockTranslatorBase:
    """What the Converse and the InvokeModel (Anthropic) translators share: the endpoint, the span
    and metric labels, and AWS's error bodies."""

    system = "aws.bedrock"
    native_openai = False

    def __init__(
        self,
        provider: Provider,
        *,
        pod_identity: AwsCredentialSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`pod_identity`: the sidecar's own AWS credentials (web identity), for a provider whose Secret
        holds neither AWS keys nor a Bedrock API key; without it such a provider's requests fail as
        CredentialsUnavailable, before anything is sent."""
        self.provider = provider
        self._endpoint = BedrockEndpoint(provider, pod_identity=pod_identity, clock=clock)
        self.server_address, self.server_port = self._endpoint.server_address, self._endpoint.server_port

    def error_message(self, status: int, body: bytes) -> str:
        return bedrock_error_message(body)
