#!/usr/bin/env python3
"""Create the TLS certificates of a diffsweep dask cluster (one-time step).

    python deploy/docker/make-certs.py deploy/docker/certs [--host dask.example.org ...]

writes, into the directory (created, mode 0700):

    ca.pem                    the cluster's own certificate authority (public)
    ca-key.pem                its private key: keep it offline, it signs new members
    scheduler.pem / -key.pem  the scheduler's certificate and key
    worker.pem / -key.pem     the workers'
    client.pem / -key.pem     for `diffsweep run --tls-ca-file ca.pem --tls-cert client.pem
                              --tls-key client-key.pem`

Every certificate is signed by the CA and valid for both server and client use: the
dask scheduler and workers require the peer to present a certificate signed by this CA
(mutual TLS), so only holders of one of these keys can submit work.  Names: localhost,
127.0.0.1, the compose/Kubernetes service names (``scheduler``, ``diffsweep-scheduler``)
and any ``--host``.  Keys are written 0600; existing files are never overwritten.

Needs only the ``cryptography`` package (``pip install 'diffsweep[cluster]'``).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

ROLES = ("scheduler", "worker", "client")
DEFAULT_HOSTS = (
    "localhost",
    "127.0.0.1",
    "scheduler",
    "diffsweep-scheduler",
    "diffsweep-scheduler.default.svc.cluster.local",
)


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "diffsweep dask cluster"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _alternative_names(hosts: Iterable[str]):
    from cryptography import x509

    names = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _write(path: Path, data: bytes, mode: int) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def make_certificates(
    directory: str | os.PathLike[str], hosts: Sequence[str] = (), days: int = 365
) -> dict[str, Path]:
    """Create a CA and one certificate per role in ``directory``; return the file paths.

    Returns a mapping with keys ``ca``, ``ca-key`` and ``<role>``, ``<role>-key`` for each
    role in :data:`ROLES`.  Refuses (FileExistsError) to overwrite existing files.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    out = Path(directory)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = {"ca": out / "ca.pem", "ca-key": out / "ca-key.pem"}
    for role in ROLES:
        paths[role] = out / f"{role}.pem"
        paths[f"{role}-key"] = out / f"{role}-key.pem"
    existing = [str(path) for path in paths.values() if path.exists()]
    if existing:
        raise FileExistsError(f"refusing to overwrite {', '.join(existing)}")

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    def pem_key(key) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    ca_key = _key()
    ca_name = _name("diffsweep cluster CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(paths["ca"], ca.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(paths["ca-key"], pem_key(ca_key), 0o600)

    names = _alternative_names([*DEFAULT_HOSTS, *hosts])
    for role in ROLES:
        key = _key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(f"diffsweep {role}"))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(names, critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write(paths[role], certificate.public_bytes(serialization.Encoding.PEM), 0o644)
        # Read by the non-root user inside the containers; the directory itself is 0700
        # on the host and mounted read-only.
        _write(paths[f"{role}-key"], pem_key(key), 0o600)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Create a CA and scheduler/worker/client certificates for a dask cluster."
    )
    parser.add_argument("directory", help="where to write the PEM files (created)")
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        help="extra DNS name or IP address of the scheduler (repeatable)",
    )
    parser.add_argument("--days", type=int, default=365, help="validity (default 365)")
    args = parser.parse_args(argv)
    try:
        paths = make_certificates(args.directory, args.host, args.days)
    except FileExistsError as error:
        print(f"make-certs: {error}", file=sys.stderr)
        return 1
    for label, path in paths.items():
        print(f"{label:15} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
