"""Quick-start TLS material: a private CA, a server certificate and client certificates.

``fedloom certs --out certs/ --clients hospital-a,hospital-b`` writes

- ``ca.pem`` / ``ca.key``: the run's certificate authority (keep ``ca.key`` offline);
- ``server.pem`` / ``server.key``: for the server, valid for ``--hosts`` (IPs and DNS names);
- ``client-<id>.pem`` / ``client-<id>.key``: one per client, with the client id as the common
  name, for mutual TLS (the server learns who is calling from the verified certificate).

Keys are EC P-256 and written with mode 0600. For production, use your organization's PKI;
these are for a quick, still-encrypted and authenticated, start.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Issued", "create_ca", "issue", "write_quickstart"]

VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class Issued:
    """A key and its certificate."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedloom"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def create_ca(common_name: str = "fedloom CA") -> Issued:
    """A self-signed certificate authority."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(key, certificate)


def issue(ca: Issued, common_name: str, *, server: bool, hosts: Sequence[str] = ()) -> Issued:
    """A certificate signed by ``ca`` for a server (valid for ``hosts``) or a client."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    names: list[x509.GeneralName] = []
    for host in hosts if server else [common_name]:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return Issued(key, builder.sign(ca.key, hashes.SHA256()))


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    path.write_bytes(data)
    if secret:
        os.chmod(path, 0o600)


def write_quickstart(
    out_dir: str | Path,
    clients: Sequence[str],
    *,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
) -> list[Path]:
    """Write a CA, a server certificate for ``hosts`` and one certificate per client."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bad = [c for c in clients if not c or "/" in c or c.startswith(".")]
    if bad:
        raise ValueError(f"client ids must be non-empty file-name-safe strings, got {bad}")
    ca = create_ca()
    written = []
    for stem, issued in [
        ("ca", ca),
        ("server", issue(ca, hosts[0] if hosts else "fedloom-server", server=True, hosts=hosts)),
        *((f"client-{c}", issue(ca, c, server=False)) for c in clients),
    ]:
        _write(out / f"{stem}.pem", issued.certificate_pem(), secret=False)
        _write(out / f"{stem}.key", issued.key_pem(), secret=True)
        written += [out / f"{stem}.pem", out / f"{stem}.key"]
    return written
