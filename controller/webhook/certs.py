"""Pure: the controller's own CA and serving certificate, and when to renew them.

No I/O: `certstore.py` keeps the result in a Secret and the webhook's
caBundle. Lifetimes: the CA lives 10 years and is replaced when under a year
is left; the serving certificate lives a year and is renewed when under a
third of its life is left, or when the names it must carry change. A new CA
goes into the trusted bundle (the webhook's caBundle, what new sidecars are
given) next to the old one while that is still valid, so an apiserver or
sidecar holding either verifies. A sidecar injected before a CA change holds
only the old CA: it keeps serving its last snapshot and verifies the
controller again once its pod is re-created (once in nine years).

ECDSA P-256 keys: as strong as RSA-3072 here, and fast to make at start.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = timedelta(days=3650)
CA_RENEW_BEFORE = timedelta(days=365)
SERVING_LIFETIME = timedelta(days=365)
CLOCK_SKEW = timedelta(minutes=5)  # backdate: a replica or apiserver with a slightly late clock still accepts

# Secret keys, as cert-manager and kubernetes.io/tls name them.
CA_CERT, CA_KEY, TLS_CERT, TLS_KEY = "ca.crt", "ca.key", "tls.crt", "tls.key"


@dataclass(frozen=True, kw_only=True)
class CertBundle:
    ca_pem: str  # the trusted bundle: the current CA first, then an older one still valid
    ca_key_pem: str = field(repr=False)
    cert_pem: str
    key_pem: str = field(repr=False)

    def as_secret_data(self) -> dict[str, str]:
        return {CA_CERT: self.ca_pem, CA_KEY: self.ca_key_pem, TLS_CERT: self.cert_pem, TLS_KEY: self.key_pem}

    @classmethod
    def from_secret_data(cls, data: dict[str, str]) -> CertBundle | None:
        """None when a key is missing (an empty Secret the chart made for us to fill)."""
        if not all(data.get(k) for k in (CA_CERT, CA_KEY, TLS_CERT, TLS_KEY)):
            return None
        return cls(ca_pem=data[CA_CERT], ca_key_pem=data[CA_KEY], cert_pem=data[TLS_CERT], key_pem=data[TLS_KEY])


def service_hosts(*, service: str, namespace: str, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The names a Service is reached by in the cluster, and any extra (e.g. 127.0.0.1 in tests)."""
    names = (
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
        *extra,
    )
    return tuple(dict.fromkeys(names))


def new_bundle(*, hosts: Sequence[str], now: datetime, previous: CertBundle | None = None) -> CertBundle:
    """What the Secret should hold now: `previous` unchanged if it is still good, else renewed."""
    if previous is not None and renewal_reason(previous, hosts=hosts, now=now) is None:
        return previous
    ca_cert, ca_key = _ca_of(previous, now=now)
    trusted = [ca_cert]
    if previous is not None:  # keep older CAs in the bundle while they are still valid
        for old in x509.load_pem_x509_certificates(previous.ca_pem.encode()):
            if (
                old.fingerprint(hashes.SHA256()) != ca_cert.fingerprint(hashes.SHA256())
                and old.not_valid_after_utc > now
            ):
                trusted.append(old)
    cert, key = _serving(hosts=hosts, ca_cert=ca_cert, ca_key=ca_key, now=now)
    return CertBundle(
        ca_pem="".join(_pem(c) for c in trusted),
        ca_key_pem=_key_pem(ca_key),
        cert_pem=_pem(cert),
        key_pem=_key_pem(key),
    )


def renewal_reason(bundle: CertBundle, *, hosts: Sequence[str], now: datetime) -> str | None:
    """Why `bundle` must be renewed now, or None if it is good."""
    try:
        cas = x509.load_pem_x509_certificates(bundle.ca_pem.encode())
        cert = x509.load_pem_x509_certificate(bundle.cert_pem.encode())
        serialization.load_pem_private_key(bundle.key_pem.encode(), password=None)
        serialization.load_pem_private_key(bundle.ca_key_pem.encode(), password=None)
    except ValueError as exc:
        return f"unreadable: {exc}"
    ca = cas[0]
    if ca.not_valid_after_utc - now < CA_RENEW_BEFORE:
        return f"CA expires {ca.not_valid_after_utc:%Y-%m-%d}"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "serving certificate not signed by the current CA"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    if cert.not_valid_after_utc - now < lifetime / 3:
        return f"serving certificate expires {cert.not_valid_after_utc:%Y-%m-%d}"
    missing = set(hosts) - set(_hosts_of(cert))
    if missing:
        return f"serving certificate lacks {sorted(missing)}"
    return None


def expires(bundle: CertBundle) -> datetime:
    return x509.load_pem_x509_certificate(bundle.cert_pem.encode()).not_valid_after_utc


def _ca_of(previous: CertBundle | None, *, now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The previous CA while it has long enough to live, else a new one."""
    if previous is not None:
        try:
            ca = x509.load_pem_x509_certificates(previous.ca_pem.encode())[0]
            key = serialization.load_pem_private_key(previous.ca_key_pem.encode(), password=None)
            if (
                isinstance(key, ec.EllipticCurvePrivateKey)
                and ca.not_valid_after_utc - now >= CA_RENEW_BEFORE
                and ca.public_key() == key.public_key()
            ):
                return ca, key
        except ValueError:
            pass  # unreadable: start over
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "modelway"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"modelway-controller-ca-{now:%Y%m%d%H%M%S}"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return ca, key


def _serving(
    *, hosts: Sequence[str], ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, now: datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if not hosts:
        raise ValueError("a serving certificate needs at least one host name")
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [_san(h) for h in hosts]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + SERVING_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _hosts_of(cert: x509.Certificate) -> list[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*sans.get_values_for_type(x509.DNSName), *(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))]


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
