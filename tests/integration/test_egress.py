"""Corporate egress through the real sidecar: HTTPS_PROXY (CONNECT tunnels), NO_PROXY, a refusing proxy.

The https provider is the OpenAI fake behind TLS, with a certificate for ``provider.example`` from a
throwaway CA that only the providers' caBundle makes the sidecar trust. That name resolves only in
the proxy, so an answer proves the call went through the tunnel.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from aiohttp import web

from tests.fakes import openai_fake
from tests.fakes.process import FakeProviderProcess
from tests.fakes.server import DEFAULT_KEYS
from tests.fakes.threaded import AppThread
from tests.harness.certs import CertAuthority
from tests.harness.connect_proxy import ConnectProxy
from tests.integration.sidecar import SidecarProcess

PASSWORD = "pr0xy-s3cret-pass"


class TlsAppThread(AppThread):
    """The OpenAI fake over https on 127.0.0.1, with the given certificate."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(lambda: openai_fake.create_app(DEFAULT_KEYS["openai"]))
        self._context = context
        self.port = 0

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        runner = web.AppRunner(self._make_app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self._context)
        await site.start()
        self.port = int(runner.addresses[0][1])
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return CertAuthority(tmp_path_factory.mktemp("egress-ca"))


@pytest.fixture(scope="module")
def tls_fake(ca: CertAuthority) -> Iterator[TlsAppThread]:
    pair = ca.issue("provider", common_name="provider.example", hosts=("provider.example", "localhost"), server=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pair.cert, pair.key)
    fake = TlsAppThread(context)
    with fake:
        yield fake


def _snapshot(tls_port: int, plain_url: str, ca_pem: str | None) -> dict[str, Any]:
    key = DEFAULT_KEYS["openai"]

    def provider(name: str, base_url: str) -> dict[str, Any]:
        trust = {"caBundle": ca_pem} if ca_pem is not None and base_url.startswith("https") else {}
        return {"name": name, "type": "openai", "baseUrl": base_url, "apiKey": key, **trust}

    def route(model: str, backends: list[str], fallbacks: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
        rule: dict[str, Any] = {
            "name": "default",
            "backends": [{"provider": b, "model": "gpt-4o"} for b in backends],
            "retry": {"attempts": 1},
        }
        if fallbacks:
            rule["fallbacks"] = [{"provider": b, "model": "gpt-4o"} for b in fallbacks]
        return {"name": model, "model": model, "rules": [rule]}

    return {
        "version": "egress-1",
        "providers": [
            provider("remote", f"https://provider.example:{tls_port}/v1"),
            provider("inside", f"https://localhost:{tls_port}/v1"),
            provider("plain", plain_url + "/v1"),
        ],
        "routes": [route("remote", ["remote"]), route("inside", ["inside"]), route("either", ["remote"], ["plain"])],
    }


def _sidecar(
    ca: CertAuthority | None, proxy: ConnectProxy, tls_fake: TlsAppThread, plain: FakeProviderProcess
) -> SidecarProcess:
    """`ca`: the providers' caBundle (None: none, so the system's CAs, which do not know the fake's)."""
    proxy_url = proxy.url.replace("http://", f"http://egress-user:{PASSWORD}@")
    ca_pem = ca.ca_pem.decode() if ca is not None else None
    return SidecarProcess(
        _snapshot(tls_fake.port, plain.base_url, ca_pem),
        env={"HTTPS_PROXY": proxy_url, "NO_PROXY": "localhost,.corp.internal"},
    )


def _ask(sidecar: SidecarProcess, model: str) -> str:
    answer = sidecar.openai_client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello"}]
    )
    return answer.choices[0].message.content or ""


def test_https_provider_is_called_through_the_connect_tunnel_and_no_proxy_goes_direct(
    ca: CertAuthority, tls_fake: TlsAppThread, fake_openai: FakeProviderProcess
) -> None:
    proxy = ConnectProxy(hosts={"provider.example": "127.0.0.1"})
    with proxy, _sidecar(ca, proxy, tls_fake, fake_openai) as sidecar:
        assert _ask(sidecar, "remote")
        assert _ask(sidecar, "remote")  # the tunnelled connection is pooled: no second CONNECT
        assert proxy.connects == [f"provider.example:{tls_fake.port}"]
        assert proxy.authorizations[0] is not None and proxy.authorizations[0].startswith("Basic ")
        assert _ask(sidecar, "inside")  # localhost is in NO_PROXY
        assert proxy.connects == [f"provider.example:{tls_fake.port}"]
        assert PASSWORD not in sidecar.logs()
        assert f"127.0.0.1:{proxy.port}" in sidecar.logs()  # the start-up line names the proxy


@pytest.mark.parametrize("refusal", ["407", "hang-up"])
def test_a_proxy_that_refuses_is_a_connect_error_naming_it_and_the_fallback_answers(
    refusal: str, ca: CertAuthority, tls_fake: TlsAppThread, fake_openai: FakeProviderProcess
) -> None:
    proxy = ConnectProxy(refuse=407) if refusal == "407" else ConnectProxy(hang_up=True)
    with proxy, _sidecar(ca, proxy, tls_fake, fake_openai) as sidecar:
        with pytest.raises(openai.APIStatusError) as caught:
            _ask(sidecar, "remote")
        message = str(caught.value)
        assert caught.value.status_code == 502
        assert f"127.0.0.1:{proxy.port}" in message
        assert ("407" in message) if refusal == "407" else ("closed the connection" in message)
        assert PASSWORD not in message
        assert _ask(sidecar, "either")  # the fallback, an http provider called directly
        assert len(fake_openai.requests()) == 1
        assert PASSWORD not in sidecar.logs()


def test_without_the_providers_ca_bundle_its_certificate_is_not_trusted(
    ca: CertAuthority, tls_fake: TlsAppThread, fake_openai: FakeProviderProcess
) -> None:
    proxy = ConnectProxy(hosts={"provider.example": "127.0.0.1"})
    with proxy, _sidecar(None, proxy, tls_fake, fake_openai) as sidecar:
        with pytest.raises(openai.APIStatusError) as caught:
            _ask(sidecar, "remote")
        assert caught.value.status_code == 502
        assert proxy.connects == [f"provider.example:{tls_fake.port}"]  # the tunnel was made; TLS refused
        assert _ask(sidecar, "either")  # and the fallback answers
