"""The system's CAs read one at a time from a hashed directory, not the whole bundle per context.

Each test points OpenSSL's CA directory (SSL_CERT_DIR) at a throwaway CA's `openssl rehash`ed
folder, so the machine's own CAs play no part; a TLS server with a certificate from that CA, or
from another, answers the handshakes. The last test runs the real sidecar against an https
provider that only the directory makes it trust.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from proxy.system_trust import system_trust_context
from tests.fakes.server import DEFAULT_KEYS
from tests.harness.certs import CertAuthority
from tests.integration.sidecar import SidecarProcess
from tests.integration.test_egress import TlsAppThread


def _hashed_dir(path: Path, *cas: CertAuthority) -> Path:
    path.mkdir()
    for index, ca in enumerate(cas):
        shutil.copy(ca.cert, path / f"ca{index}.pem")
    subprocess.run(["openssl", "rehash", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return CertAuthority(tmp_path_factory.mktemp("trusted-ca"), name="trusted-ca")


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return CertAuthority(tmp_path_factory.mktemp("stranger-ca"), name="stranger-ca")


@pytest.fixture
def ca_dir(tmp_path: Path, trusted: CertAuthority, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = _hashed_dir(tmp_path / "certs", trusted)
    monkeypatch.setenv("SSL_CERT_DIR", str(directory))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    return directory


def _server_context(ca: CertAuthority, name: str) -> ssl.SSLContext:
    pair = ca.issue(name, common_name="localhost", hosts=("localhost",), server=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pair.cert, pair.key)
    return context


@pytest.fixture
async def servers(trusted: CertAuthority, stranger: CertAuthority) -> AsyncIterator[dict[str, int]]:
    """https servers on localhost: one with a certificate from `trusted`, one from `stranger`."""
    runner = web.AppRunner(web.Application(), access_log=None)  # the handshake is all that is asked
    await runner.setup()
    ports: dict[str, int] = {}
    for name, ca in (("trusted", trusted), ("stranger", stranger)):
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=_server_context(ca, name))
        await site.start()
        ports[name] = int(runner.addresses[-1][1])
    try:
        yield ports
    finally:
        await runner.cleanup()


async def _handshake(context: ssl.SSLContext, port: int) -> None:
    _, writer = await asyncio.open_connection("localhost", port, ssl=context)
    writer.close()
    await writer.wait_closed()


def _cas_held(context: ssl.SSLContext) -> int:
    return context.cert_store_stats()["x509_ca"]


async def test_a_ca_is_read_when_a_handshake_needs_it_and_only_that_one(ca_dir: Path, servers: dict[str, int]) -> None:
    context = system_trust_context()
    assert _cas_held(context) == 0  # nothing parsed up front (a bundle would be ~140 CAs)
    await _handshake(context, servers["trusted"])
    assert _cas_held(context) == 1
    await _handshake(context, servers["trusted"])  # kept: no second read
    assert _cas_held(context) == 1


async def test_a_certificate_from_a_ca_the_system_does_not_know_is_refused(
    ca_dir: Path, servers: dict[str, int]
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        await _handshake(system_trust_context(), servers["stranger"])


async def test_the_hostname_is_checked(ca_dir: Path, servers: dict[str, int]) -> None:
    context = system_trust_context()
    _, writer = await asyncio.open_connection("127.0.0.1", servers["trusted"], ssl=context, server_hostname="localhost")
    writer.close()
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        await asyncio.open_connection("127.0.0.1", servers["trusted"], ssl=context, server_hostname="other.example")


async def test_an_explicit_ssl_cert_file_is_loaded_whole(
    ca_dir: Path, stranger: CertAuthority, servers: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The operator named a bundle: it is what the sidecar trusts, as OpenSSL's default would.
    monkeypatch.setenv("SSL_CERT_FILE", str(stranger.cert))
    context = system_trust_context()
    assert _cas_held(context) >= 1
    await _handshake(context, servers["stranger"])


def test_a_directory_without_hashed_names_falls_back_to_the_bundle(
    tmp_path: Path, trusted: CertAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(trusted.cert, plain / "trusted.pem")  # not rehashed: OpenSSL could not find it by hash
    monkeypatch.setenv("SSL_CERT_DIR", str(plain))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    # what the standard library's default makes: the system's bundle, parsed whole
    assert _cas_held(system_trust_context()) == _cas_held(ssl.create_default_context())


@pytest.fixture(scope="module")
def tls_provider(trusted: CertAuthority) -> Iterator[TlsAppThread]:
    fake = TlsAppThread(_server_context(trusted, "provider"))
    with fake:
        yield fake


def test_the_sidecar_trusts_a_provider_whose_ca_is_in_the_system_directory(
    tmp_path: Path, trusted: CertAuthority, tls_provider: TlsAppThread
) -> None:
    directory = _hashed_dir(tmp_path / "certs", trusted)
    snapshot = {
        "version": "system-trust",
        "providers": [
            {
                "name": "tls",
                "type": "openai",
                "baseUrl": f"https://localhost:{tls_provider.port}/v1",  # no caBundle: the system's CAs
                "apiKey": DEFAULT_KEYS["openai"],
            }
        ],
        "routes": [
            {
                "name": "tls",
                "model": "tls",
                "rules": [{"name": "default", "backends": [{"provider": "tls", "model": "gpt-4o"}]}],
            }
        ],
    }
    with SidecarProcess(snapshot, env={"SSL_CERT_FILE": "", "SSL_CERT_DIR": str(directory)}) as sidecar:
        answer = sidecar.openai_client().chat.completions.create(
            model="tls", messages=[{"role": "user", "content": "hi"}]
        )
    assert answer.choices[0].message.content
