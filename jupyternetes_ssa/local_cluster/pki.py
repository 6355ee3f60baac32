"""Certificates, keys and kubeconfigs for a throw-away, loopback-only control plane.

One CA signs the apiserver's serving certificate (for 127.0.0.1/localhost) and a client certificate
per component, so the kubeconfigs verify the server instead of skipping TLS verification.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=365)
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its key, both PEM files on disk."""

    cert: Path
    key: Path


def _name(common_name: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(pair: KeyPair, cert: x509.Certificate, key: PrivateKey) -> KeyPair:
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pair.key.chmod(0o600)
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pair


def _builder(subject: x509.Name, issuer: x509.Name, key: PrivateKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def make_ca(directory: Path, stem: str = "ca") -> KeyPair:
    """A self-signed CA (ECDSA P-256: fast to generate, accepted by Go and OpenSSL)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"jupyternetes-ssa-local-{stem}")
    cert = (
        _builder(name, name, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return _write(KeyPair(directory / f"{stem}.crt", directory / f"{stem}.key"), cert, key)


def issue(
    ca: KeyPair,
    directory: Path,
    stem: str,
    common_name: str,
    orgs: tuple[str, ...] = (),
    server: bool = False,
) -> KeyPair:
    """A leaf certificate signed by ``ca``: a server cert for loopback, or a client cert."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(_name(common_name, orgs), ca_cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server:
        sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    return _write(KeyPair(directory / f"{stem}.crt", directory / f"{stem}.key"), cert, key)


def make_service_account_key(directory: Path) -> Path:
    """The RSA key the apiserver signs (and verifies) ServiceAccount tokens with."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = directory / "sa.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(
    path: Path,
    server: str,
    ca_cert: Path,
    user: dict[str, str],
    name: str = "jupyternetes-local",
    namespace: str | None = None,
) -> Path:
    """A single-context kubeconfig with the CA embedded and ``user`` as the credentials."""
    context: dict[str, str] = {"cluster": name, "user": name}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def cert_user(pair: KeyPair) -> dict[str, str]:
    """Kubeconfig user credentials from a client certificate, embedded."""
    return {"client-certificate-data": _b64(pair.cert), "client-key-data": _b64(pair.key)}


# --- the cluster's credentials: one file set per component ------------------------------------


@dataclass(frozen=True)
class Pki:
    """Every credential the components need, as files under <state>/pki."""

    ca: KeyPair
    apiserver: KeyPair
    front_proxy_ca: KeyPair
    front_proxy_client: KeyPair
    sa_key: Path
    admin_kubeconfig: Path
    controller_manager_kubeconfig: Path
    scheduler_kubeconfig: Path
    node_kubeconfig: Path


def make_pki(state_dir: Path, server: str, node_name: str) -> Pki:
    """A fresh CA, serving cert, SA key, and one client-cert kubeconfig per identity."""
    pki = state_dir / "pki"
    pki.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = make_ca(pki)

    def kubeconfig(stem: str, cn: str, orgs: tuple[str, ...] = ()) -> Path:
        pair = issue(ca, pki, stem, cn, orgs)
        return write_kubeconfig(pki / f"{stem}.kubeconfig", server, ca.cert, cert_user(pair))

    admin = kubeconfig("admin", "local-cluster-admin", ("system:masters",))
    front_proxy_ca = make_ca(pki, "front-proxy-ca")
    return Pki(
        ca=ca,
        apiserver=issue(ca, pki, "apiserver", "kube-apiserver", server=True),
        # The aggregation layer's CA: without it every component logs, forever, that the
        # extension-apiserver-authentication ConfigMap lacks requestheader-client-ca-file.
        front_proxy_ca=front_proxy_ca,
        front_proxy_client=issue(front_proxy_ca, pki, "front-proxy-client", "front-proxy-client"),
        sa_key=make_service_account_key(pki),
        admin_kubeconfig=shutil.copy(admin, state_dir / "kubeconfig"),
        # In system:masters because it runs every controller under this one identity.
        controller_manager_kubeconfig=kubeconfig(
            "controller-manager", "system:kube-controller-manager", ("system:masters",)
        ),
        scheduler_kubeconfig=kubeconfig("scheduler", "system:kube-scheduler"),
        node_kubeconfig=kubeconfig("node", f"system:node:{node_name}", ("system:nodes",)),
    )
