"""The controller's own certificates: what is made, when it is renewed, and replicas racing for the Secret."""

from __future__ import annotations

import asyncio
import base64
import copy
import ssl
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509

from controller.kube.errors import KubeApiError
from controller.webhook.certs import CertBundle, expires, new_bundle, renewal_reason, service_hosts
from controller.webhook.certstore import SelfManagedCerts

NOW = datetime(2030, 1, 1, tzinfo=UTC)
HOSTS = service_hosts(service="modelway-controller", namespace="modelway-system", extra=("127.0.0.1",))


def verify(bundle: CertBundle, host: str) -> None:
    """A TLS client with only the bundle's CA checks the chain and the host name (OpenSSL, not our code)."""
    cert = x509.load_pem_x509_certificate(bundle.cert_pem.encode())
    ca = x509.load_pem_x509_certificates(bundle.ca_pem.encode())[0]
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert host in [*names.get_values_for_type(x509.DNSName), *map(str, names.get_values_for_type(x509.IPAddress))]


def test_service_hosts():
    assert HOSTS == (
        "modelway-controller",
        "modelway-controller.modelway-system",
        "modelway-controller.modelway-system.svc",
        "modelway-controller.modelway-system.svc.cluster.local",
        "127.0.0.1",
    )


def test_a_new_bundle_serves_every_service_name_and_is_kept_while_good():
    bundle = new_bundle(hosts=HOSTS, now=NOW)
    for host in HOSTS:
        verify(bundle, host)
    assert renewal_reason(bundle, hosts=HOSTS, now=NOW) is None
    assert new_bundle(hosts=HOSTS, now=NOW + timedelta(days=200), previous=bundle) is bundle
    ctx = ssl.create_default_context(cadata=bundle.ca_pem)  # a real TLS stack accepts the CA
    assert ctx.cert_store_stats()["x509_ca"] == 1


def test_serving_cert_renewed_before_expiry_with_the_same_ca():
    bundle = new_bundle(hosts=HOSTS, now=NOW)
    later = NOW + timedelta(days=250)  # under a third of the year left
    assert "expires" in (renewal_reason(bundle, hosts=HOSTS, now=later) or "")
    renewed = new_bundle(hosts=HOSTS, now=later, previous=bundle)
    assert renewed.cert_pem != bundle.cert_pem and renewed.ca_pem == bundle.ca_pem
    assert expires(renewed) > expires(bundle)
    verify(renewed, "modelway-controller.modelway-system.svc")


def test_renewed_when_a_name_is_missing():
    bundle = new_bundle(hosts=HOSTS[:-1], now=NOW)
    assert "127.0.0.1" in (renewal_reason(bundle, hosts=HOSTS, now=NOW) or "")
    verify(new_bundle(hosts=HOSTS, now=NOW, previous=bundle), "127.0.0.1")


def test_ca_replaced_near_its_end_and_the_old_one_still_trusted():
    bundle = new_bundle(hosts=HOSTS, now=NOW)
    late = NOW + timedelta(days=3650 - 300)
    assert "CA expires" in (renewal_reason(bundle, hosts=HOSTS, now=late) or "")
    renewed = new_bundle(hosts=HOSTS, now=late, previous=bundle)
    cas = x509.load_pem_x509_certificates(renewed.ca_pem.encode())
    old = x509.load_pem_x509_certificates(bundle.ca_pem.encode())[0]
    assert len(cas) == 2 and cas[1] == old and cas[0] != old
    verify(renewed, "modelway-controller")


def test_garbage_is_renewed_not_trusted():
    bundle = new_bundle(hosts=HOSTS, now=NOW)
    broken = CertBundle(ca_pem=bundle.ca_pem, ca_key_pem=bundle.ca_key_pem, cert_pem="nonsense", key_pem=bundle.key_pem)
    assert renewal_reason(broken, hosts=HOSTS, now=NOW) is not None
    other = new_bundle(hosts=HOSTS, now=NOW)
    mixed = CertBundle(
        ca_pem=bundle.ca_pem, ca_key_pem=bundle.ca_key_pem, cert_pem=other.cert_pem, key_pem=other.key_pem
    )
    assert renewal_reason(mixed, hosts=HOSTS, now=NOW) == "serving certificate not signed by the current CA"


class FakeApi:
    """Secrets with resourceVersions and 409s, like the API server; `before_write` lets a rival write first."""

    def __init__(self) -> None:
        self.secrets: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.before_write: Any = None
        self.webhook = {"metadata": {"name": "hook"}, "webhooks": [{"name": "a.modelway.io", "clientConfig": {}}]}

    async def get_secret(self, name: str, *, namespace: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.secrets.get(name))

    async def create(self, rt: Any, body: dict[str, Any], *, namespace: str) -> dict[str, Any]:
        await self._rival()
        name = body["metadata"]["name"]
        if name in self.secrets:
            raise KubeApiError(409, "AlreadyExists", "exists")
        return self._store(body)

    async def replace(self, rt: Any, body: dict[str, Any]) -> dict[str, Any]:
        await self._rival()
        current = self.secrets[body["metadata"]["name"]]
        if current["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"]:
            raise KubeApiError(409, "Conflict", "the object has been modified")
        return self._store(body)

    async def get_mutating_webhook_configuration(self, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.webhook)

    async def patch(self, rt: Any, name: str, ops: list[dict[str, Any]], *, patch_type: str) -> dict[str, Any]:
        for op in ops:
            if op["op"] == "add":
                self.webhook["webhooks"][int(op["path"].split("/")[2])]["clientConfig"]["caBundle"] = op["value"]
        return self.webhook

    async def _rival(self) -> None:
        if self.before_write is not None:
            rival, self.before_write = self.before_write, None
            await rival()

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.secrets[stored["metadata"]["name"]] = stored
        return stored


def store(api: FakeApi, *, now: datetime = NOW) -> SelfManagedCerts:
    return SelfManagedCerts(
        client=api,
        namespace="modelway-system",
        secret_name="certs",
        hosts=HOSTS,  # type: ignore[arg-type]
        webhook_config_name="hook",
        now=lambda: now,
    )


@pytest.mark.parametrize("chart_made_the_secret", [False, True])
async def test_two_replicas_racing_end_up_with_one_certificate(chart_made_the_secret):
    api = FakeApi()
    if chart_made_the_secret:  # empty: the chart's placeholder the controller fills
        api._store({"metadata": {"name": "certs", "namespace": "modelway-system"}, "type": "Opaque"})
    first, second = store(api), store(api)
    api.before_write = second.sync  # the second replica writes between our read and our write
    await first.sync()
    assert first.bundle is not None and second.bundle is not None
    assert first.bundle.cert_pem == second.bundle.cert_pem
    stored = {k: base64.b64decode(v).decode() for k, v in api.secrets["certs"]["data"].items()}
    assert stored["tls.crt"] == first.bundle.cert_pem
    assert base64.b64decode(api.webhook["webhooks"][0]["clientConfig"]["caBundle"]).decode() == first.bundle.ca_pem


async def test_a_replica_renews_and_the_other_picks_it_up():
    api = FakeApi()
    one = store(api)
    await one.sync()
    assert one.bundle is not None
    original = one.bundle.cert_pem
    later = NOW + timedelta(days=300)
    renewing, follower = store(api, now=later), store(api, now=later)
    await renewing.sync()
    await follower.sync()
    assert renewing.bundle is not None and follower.bundle is not None
    assert renewing.bundle.cert_pem != original and follower.bundle.cert_pem == renewing.bundle.cert_pem
    assert api.version == 2  # one write to renew; the follower only read


def test_run_keeps_serving_when_the_api_fails(caplog):
    class Down(FakeApi):
        async def get_secret(self, name: str, *, namespace: str) -> dict[str, Any] | None:
            from controller.kube.errors import KubeConnectionError

            raise KubeConnectionError("GET secrets: connection refused")

    certs = SelfManagedCerts(
        client=Down(),
        namespace="ns",
        secret_name="certs",
        hosts=HOSTS,  # type: ignore[arg-type]
        webhook_config_name=None,
        check_seconds=0.01,
    )

    async def briefly() -> None:
        task = asyncio.create_task(certs.run())
        await asyncio.sleep(0.05)
        assert not task.done()  # still trying, not crashed
        task.cancel()

    asyncio.run(briefly())
    assert "certificate check failed" in caplog.text
