"""The provider client through an HTTP proxy: an http provider gets its request in absolute form."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from proxy.egress import EgressSettings
from proxy.http_client import HttpClient
from tests.fakes.server import serve
from tests.harness.connect_proxy import ConnectProxy


async def test_http_provider_through_http_proxy_gets_the_absolute_form_and_the_proxy_credentials(
    make_client: Callable[..., HttpClient],
) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path, "proxy_auth": request.headers.get("proxy-authorization")})

    app = web.Application()
    app.router.add_post("/v1/chat", answer)
    async with serve(app) as upstream:
        with ConnectProxy(hosts={"models.corp": "127.0.0.1"}) as proxy:
            egress = EgressSettings.from_environ({"HTTP_PROXY": proxy.url.replace("//", "//u:pw@")})
            client = make_client(egress=egress)
            url = f"http://models.corp:{upstream.port}/v1/chat?x=1"
            async with await client.post(url, body=b"{}", headers={}) as resp:
                assert resp.status == 200
                assert await resp.read() == b'{"path": "/v1/chat", "proxy_auth": null}'
            assert proxy.request_lines == [f"POST {url} HTTP/1.1"]
            assert proxy.authorizations == ["Basic dTpwdw=="]
