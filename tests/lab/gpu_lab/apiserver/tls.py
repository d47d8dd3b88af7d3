"""The lab's CA, the API server's and the router's serving certificates, the kubeconfig.

``k8s/ca.crt`` + ``ca.key`` (0600): a self-signed CA. ``server.crt/key``: the API
server (127.0.0.1, localhost). ``router.crt/key``: the router (127.0.0.1, localhost and
``*.<apps domain>``). A lab made before the CA key was kept gets a new CA (the
kubeconfig is rewritten at every start).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def ensure_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.crt, server.crt, server.key) under ``directory``; created once, then reused."""
    ca_crt, crt, key = directory / "ca.crt", directory / "server.crt", directory / "server.key"
    if all(p.exists() for p in (ca_crt, directory / "ca.key", crt, key)):
        return ca_crt, crt, key
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("gpu-lab-ca"))
        .issuer_name(_name("gpu-lab-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_crt.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_private(directory / "ca.key", _pem_key(ca_key))
    for stale in ("router.crt", "router.key"):  # signed by a CA that is gone
        (directory / stale).unlink(missing_ok=True)
    _issue(directory, "server", "gpu-lab-apiserver", [])
    return ca_crt, crt, key


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _issue(directory: Path, stem: str, cn: str, dns_names: list[str]) -> tuple[Path, Path]:
    """``<stem>.crt/.key`` for loopback (+ ``dns_names``), signed by the lab CA."""
    ca = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in ["localhost", *dns_names]]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    crt_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(key_path, _pem_key(key))
    return crt_path, key_path


def ensure_router_certificate(directory: Path, apps_domain: str) -> tuple[Path, Path]:
    """(router.crt, router.key) for 127.0.0.1, localhost and ``*.<apps_domain>``."""
    ensure_certificates(directory)
    crt, key = directory / "router.crt", directory / "router.key"
    wildcard = f"*.{apps_domain}"
    if crt.exists() and key.exists():
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if wildcard in san.get_values_for_type(x509.DNSName):
            return crt, key
    return _issue(directory, "router", "gpu-lab-router", [wildcard, apps_domain])


def write_kubeconfig(path: Path, server: str, ca_crt: Path, admin_token: str,
                     reader_token: str) -> None:
    """A kubeconfig with contexts ``lab-admin`` (current) and ``lab-reader``."""
    ca_data = base64.b64encode(ca_crt.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gpu-lab", "cluster": {
            "server": server, "certificate-authority-data": ca_data}}],
        "users": [
            {"name": "lab-admin", "user": {"token": admin_token}},
            {"name": "lab-reader", "user": {"token": reader_token}},
        ],
        "contexts": [
            {"name": "lab-admin", "context": {"cluster": "gpu-lab", "user": "lab-admin",
                                              "namespace": "default"}},
            {"name": "lab-reader", "context": {"cluster": "gpu-lab", "user": "lab-reader",
                                               "namespace": "default"}},
        ],
        "current-context": "lab-admin",
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(path, yaml.safe_dump(config, sort_keys=False).encode())
