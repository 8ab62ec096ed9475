"""Azure OpenAI: the OpenAI wire format on per-deployment URLs, `api-version`, and `api-key` or
a Microsoft Entra ID access token (`Authorization: Bearer`, read from its token source at each
request; the source's own task keeps it fresh, `proxy.auth.entra`). The Responses API is Azure's
v1 API: `POST {endpoint}/openai/v1/responses`, no api-version, the deployment in `model`."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from proxy.auth.token_source import TokenSource
from proxy.providers.base import ChatRequest, CredentialsUnavailable, EmbeddingsRequest, UpstreamRequest, json_body
from proxy.providers.openai import JSON_HEADERS, SSE_HEADERS, OpenAITranslator
from proxy.snapshot import Provider


class AzureOpenAITranslator(OpenAITranslator):
    system = "azure.ai.openai"

    def __init__(self, provider: Provider, *, token_source: TokenSource | None = None) -> None:
        super().__init__(provider)
        self._token_source = token_source
        self._base = provider.base_url.rstrip("/") + "/openai/deployments/"
        self._query = "?api-version=" + quote(provider.api_version or "", safe="")
        self._responses_url = provider.base_url.rstrip("/") + "/openai/v1/responses"

    @staticmethod
    def auth_headers(provider: Provider) -> dict[str, str]:
        if provider.api_key is None:
            return {}
        return {"api-key": provider.api_key.get_secret_value()}

    def _auth_headers(self) -> dict[str, str]:
        if self._token_source is None:
            return self._auth
        token = self._token_source.token()
        if token is None:  # nothing sent without it: Azure's 401 would read as a refused key
            raise CredentialsUnavailable(f"provider {self.provider.name!r}: {self._token_source.missing()}")
        return {"authorization": "Bearer " + token}

    def _url(self, deployment: str, operation: str) -> str:
        return f"{self._base}{quote(deployment, safe='')}/{operation}{self._query}"

    def chat_request(self, request: ChatRequest, *, model: str, stream: bool) -> UpstreamRequest:
        body: dict[str, Any] = self.chat_body(request, model=model, stream=stream)
        del body["model"]  # the deployment in the URL is the model
        headers = {**(SSE_HEADERS if stream else JSON_HEADERS), **self._auth_headers()}
        return UpstreamRequest(
            url=self._url(model, "chat/completions"), headers=headers, body=json_body(body), stream=stream
        )

    def responses_request(self, body: dict[str, Any], *, model: str, stream: bool) -> UpstreamRequest:
        out = dict(body)
        out["model"] = model  # the deployment
        headers = {**(SSE_HEADERS if stream else JSON_HEADERS), **self._auth_headers()}
        return UpstreamRequest(url=self._responses_url, headers=headers, body=json_body(out), stream=stream)

    def embeddings_request(self, request: EmbeddingsRequest, *, model: str) -> UpstreamRequest:
        body = {k: v for k, v in request.items() if k != "model"}
        headers = {**JSON_HEADERS, **self._auth_headers()}
        return UpstreamRequest(url=self._url(model, "embeddings"), headers=headers, body=json_body(body))
