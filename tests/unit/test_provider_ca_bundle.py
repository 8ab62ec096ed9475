"""A ModelProvider's spec.tls.caBundle: checked by the controller, carried in the snapshot, turned
by the sidecar into that provider's TLS context once per snapshot."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from controller.compile import Workload, compile_workload, judge
from proxy.runtime import Runtime
from proxy.snapshot import parse_snapshot, to_wire
from tests.unit.test_compile import provider, resources, route, secret


def _self_signed_ca(directory: Path, name: str) -> str:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(directory / f"{name}.key"), "-out", str(directory / f"{name}.crt"), "-days", "2",
         "-subj", f"/CN={name}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return (directory / f"{name}.crt").read_text()


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _self_signed_ca(tmp_path_factory.mktemp("ca"), "corp-ca")


def _judged(ca_bundle: str):  # type: ignore[no-untyped-def]
    view = resources(
        provider("internal", baseURL="https://llm.corp:8443/v1", tls={"caBundle": ca_bundle}),
        secret(apiKey="k"),
        route("chat", "chat", [{"provider": "internal", "model": "m"}]),
    )
    return judge(view)


def test_the_bundle_reaches_the_snapshot_and_the_sidecar_builds_that_providers_context(ca_pem: str) -> None:
    snapshot = compile_workload(_judged(ca_pem), Workload("team-a"))
    [compiled] = snapshot.providers
    assert compiled.ca_bundle == ca_pem
    received = parse_snapshot(to_wire(snapshot))  # as the sidecar decodes it
    runtime = Runtime.build(received)
    context = runtime.tls_contexts[("llm.corp", 8443)]
    assert isinstance(context, ssl.SSLContext)
    assert [cert["subject"] for cert in context.get_ca_certs()] == [((("commonName", "corp-ca"),),)]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


@pytest.mark.parametrize(
    ("bundle", "says"),
    [
        ("not a certificate", "no PEM certificate"),
        ("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", "not valid PEM"),
    ],
)
def test_a_bad_bundle_is_accepted_false_with_a_reason(bundle: str, says: str) -> None:
    judgement = _judged(bundle)
    accepted = judgement.providers[("ModelProvider", "team-a", "internal")].accepted
    assert (accepted.ok, accepted.reason) == (False, "Invalid")
    assert "caBundle" in accepted.message and says in accepted.message
    assert compile_workload(judgement, Workload("team-a")).providers == ()


def test_a_key_in_the_bundle_is_refused_and_not_quoted(ca_pem: str) -> None:
    key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"
    accepted = _judged(ca_pem + key).providers[("ModelProvider", "team-a", "internal")].accepted
    assert not accepted.ok and "private key" in accepted.message and "MIGHAgEA" not in accepted.message


def test_no_bundle_no_context() -> None:
    view = resources(
        provider("openai"), secret(apiKey="k"), route("chat", "chat", [{"provider": "openai", "model": "m"}])
    )
    assert Runtime.build(compile_workload(judge(view), Workload("team-a"))).tls_contexts == {}


def test_a_bundle_shaped_right_but_unreadable_trusts_nothing_rather_than_the_system() -> None:
    import base64

    from proxy.snapshot import Provider, Snapshot

    sequence = base64.b64encode(b"\x30\x03\x02\x01\x00").decode()  # DER, but not a certificate
    pem = f"-----BEGIN CERTIFICATE-----\n{sequence}\n-----END CERTIFICATE-----\n"
    provider = Provider(name="corp", type="openai", base_url="https://llm.corp/v1", ca_bundle=pem)
    context = Runtime.build(Snapshot(version="1", providers=(provider,))).tls_contexts[("llm.corp", 443)]
    assert context.get_ca_certs() == [] and context.verify_mode == ssl.CERT_REQUIRED


def test_providers_at_one_host_with_different_bundles_trust_both_not_the_last_ones(ca_pem: str, tmp_path: Path) -> None:
    from proxy.snapshot import Provider, Snapshot

    other_ca = _self_signed_ca(tmp_path, "other-ca")
    unreadable = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n"  # DER, not a certificate
    providers = (  # one host:port, whose pooled connections both providers share
        Provider(name="chat", type="openai", base_url="https://llm.corp:8443/v1", ca_bundle=ca_pem),
        Provider(name="embed", type="openai", base_url="https://llm.corp:8443/embed", ca_bundle=other_ca),
        Provider(name="broken", type="openai", base_url="https://llm.corp:8443/x", ca_bundle=unreadable),
    )
    context = Runtime.build(Snapshot(version="1", providers=providers)).tls_contexts[("llm.corp", 8443)]
    trusted = sorted(dict(cert["subject"][0])["commonName"] for cert in context.get_ca_certs())
    assert trusted == ["corp-ca", "other-ca"]
