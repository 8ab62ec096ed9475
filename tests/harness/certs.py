"""A throwaway certificate authority for a test session, made with the openssl CLI.

The openssl CLI (present on the machine image) rather than the `cryptography`
package keeps the harness free of a dependency the project does not otherwise
need. One CA signs the apiserver's serving cert, the admin client cert
(O=system:masters) and any webhook serving certs a test needs; the apiserver
trusts it as its client CA, and webhook configurations use ``ca_pem`` as their
caBundle.
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

# EC P-256: as good as RSA here and much faster to generate.
_KEY_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_DAYS = "30"


def _openssl(*args: str) -> None:
    res = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{res.stderr}")


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


class CertAuthority:
    """A CA in ``directory``; ``issue`` signs leaf certs with it."""

    def __init__(self, directory: Path, name: str = "modelway-test-ca") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.cert = directory / "ca.crt"
        self.key = directory / "ca.key"
        _openssl(
            "req", "-x509", *_KEY_ARGS, "-keyout", str(self.key), "-out", str(self.cert),
            "-days", _DAYS, "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip

    @property
    def ca_pem(self) -> bytes:
        return self.cert.read_bytes()

    def issue(
        self,
        name: str,
        *,
        common_name: str,
        organizations: tuple[str, ...] = (),
        hosts: tuple[str, ...] = (),
        client: bool = False,
        server: bool = False,
    ) -> CertPair:
        """Sign a leaf cert; ``hosts`` become DNS or IP subjectAltNames."""
        subj = "".join(f"/O={o}" for o in organizations) + f"/CN={common_name}"
        usages = [u for u, on in (("serverAuth", server), ("clientAuth", client)) if on]
        ext = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature"]
        if usages:
            ext.append("extendedKeyUsage=" + ",".join(usages))
        if hosts:
            ext.append("subjectAltName=" + ",".join(_san(h) for h in hosts))
        pair = CertPair(self.dir / f"{name}.crt", self.dir / f"{name}.key")
        addext = [a for e in ext for a in ("-addext", e)]
        _openssl(
            "req", "-x509", *_KEY_ARGS, "-keyout", str(pair.key), "-out", str(pair.cert),
            "-days", _DAYS, "-subj", subj, "-CA", str(self.cert), "-CAkey", str(self.key),
            *addext,
        )  # fmt: skip
        return pair


def _san(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"DNS:{host}"
    return f"IP:{host}"


def service_account_keys(directory: Path) -> CertPair:
    """RSA key pair the apiserver signs (and verifies) ServiceAccount tokens with.

    ``cert`` holds the public key (not a certificate): --service-account-key-file
    takes either.
    """
    pair = CertPair(directory / "sa.pub", directory / "sa.key")
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", str(pair.key))  # fmt: skip
    _openssl("pkey", "-in", str(pair.key), "-pubout", "-out", str(pair.cert))
    return pair
