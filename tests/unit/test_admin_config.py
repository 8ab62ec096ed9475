"""The sidecar's /config is for whoever is inside the pod, not for the pod network."""

from unittest import mock

from aiohttp.test_utils import make_mocked_request

from proxy.admin import build_admin_app, config
from proxy.runtime import Runtime, RuntimeHolder
from proxy.snapshot import parse_snapshot


def _request(peer: str):
    holder = RuntimeHolder()
    holder.swap(Runtime.build(parse_snapshot({"providers": [], "routes": []})))
    app = build_admin_app(holder=holder, source_status=lambda: {})
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (peer, 40000) if name == "peername" else default
    return make_mocked_request("GET", "/config", app=app, transport=transport)


async def test_config_answers_loopback_only():
    assert (await config(_request("127.0.0.1"))).status == 200
    assert (await config(_request("::1"))).status == 200
    refused = await config(_request("10.1.2.3"))
    assert refused.status == 403
    assert b"kubectl port-forward" in refused.body
