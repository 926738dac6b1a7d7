"""TLS material: the development CA, the provisioning server's certificate, phone certificates.

Production uses a Cisco-signed server certificate and the vendors' client CAs (tls_cert, tls_key,
tls_client_ca); development and tests use a private CA created under var/tls, which also signs
phone client certificates whose subjects look like the vendors' own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from autoprov.config import Settings
from autoprov.mac import normalize
from provisioning_wsgi import vendors

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
SERVER_CERT = "server.pem"
SERVER_KEY = "server-key.pem"
SERVER_EC_CERT = "server-ecdsa.pem"
SERVER_EC_KEY = "server-ecdsa-key.pem"
CA_DAYS = 3650
SERVER_DAYS = 825
PHONE_DAYS = 3650
# A development server certificate closer than this to expiry is replaced.
RENEW_BEFORE = dt.timedelta(days=30)


class TlsError(RuntimeError):
    """TLS material is missing or unusable; the message names the file."""


@dataclass(frozen=True)
class Authority:
    cert: x509.Certificate
    key: PrivateKey


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _rsa_key() -> rsa.RSAPrivateKey:
    # RSA rather than EC for the CA and server: old SPA firmware only speaks RSA.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _builder(subject: x509.Name, issuer: x509.Name, key: PrivateKey,
             not_before: dt.datetime, not_after: dt.datetime) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )


def make_ca(common_name: str = "autoprov development CA", *,
            days: int = CA_DAYS) -> Authority:
    key = _rsa_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "autoprov"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        _builder(name, name, key, now - dt.timedelta(minutes=5), now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def _alt_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue_server(ca: Authority, names: list[str], *, days: int = SERVER_DAYS,
                 ecdsa: bool = False) -> tuple[x509.Certificate, PrivateKey]:
    key: PrivateKey = ec.generate_private_key(ec.SECP256R1()) if ecdsa else _rsa_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = _now()
    cert = (
        _builder(subject, ca.cert.subject, key, now - dt.timedelta(minutes=5),
                 now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_alt_name(n) for n in dict.fromkeys(names)]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                       critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return cert, key


def phone_subject(vendor: str, mac: str) -> x509.Name:
    """A subject in the style of the vendor's factory certificates (vendor-protocols.md §3)."""
    try:
        module = vendors.get(vendor)
    except vendors.UnknownVendorError as exc:
        raise TlsError(str(exc)) from None
    return module.client_subject(normalize(mac))


def issue_phone(ca: Authority, subject: x509.Name, *, not_before: dt.datetime | None = None,
                not_after: dt.datetime | None = None) -> tuple[x509.Certificate, PrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or _now() - dt.timedelta(minutes=5)
    cert = (
        _builder(subject, ca.cert.subject, key, start,
                 not_after or start + dt.timedelta(days=PHONE_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return cert, key


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def write_pair(cert: x509.Certificate, key: PrivateKey, cert_path: Path, key_path: Path) -> None:
    _write(key_path, key_pem(key), 0o600)
    _write(cert_path, cert_pem(cert), 0o644)


def load_authority(cert_path: Path, key_path: Path) -> Authority:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise TlsError(f"cannot load CA {cert_path}: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise TlsError(f"{key_path}: unsupported key type")
    return Authority(cert, key)


def dev_ca_path(settings: Settings) -> Path:
    return settings.tls_dir / CA_CERT


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Two `make up` at once must not create two different CAs."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def dev_ca(settings: Settings) -> Authority:
    """The development CA, created if absent."""
    cert_path, key_path = settings.tls_dir / CA_CERT, settings.tls_dir / CA_KEY
    with _locked(settings.tls_dir):
        if not (cert_path.exists() and key_path.exists()):
            ca = make_ca()
            write_pair(ca.cert, ca.key, cert_path, key_path)
            return ca
    return load_authority(cert_path, key_path)


def _server_names(settings: Settings) -> list[str]:
    names = [settings.public_host, "localhost", "127.0.0.1", "::1"]
    if settings.http_bind not in ("0.0.0.0", "::", ""):  # noqa: S104 - compared, not bound
        names.append(settings.http_bind)
    return names


def _covers(cert: x509.Certificate, names: list[str]) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = set(san.get_values_for_type(x509.DNSName))
    have |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return all(str(_alt_name(n).value) in have for n in names)


def ensure_dev_material(settings: Settings) -> None:
    """Create the development CA and server certificates under var/tls when they are in use.

    A server certificate is reissued when it no longer names public_host or nears expiry, so
    changing public_host in development just works.
    """
    if settings.tls_cert and settings.tls_key and settings.tls_client_ca:
        return
    ca = dev_ca(settings)
    if settings.tls_cert and settings.tls_key:
        return
    names = _server_names(settings)
    for (cert_path, key_path), ecdsa in zip(_dev_server_pairs(settings), (False, True),
                                            strict=True):
        with _locked(settings.tls_dir):
            if _still_good(cert_path, key_path, names):
                continue
            cert, key = issue_server(ca, names, ecdsa=ecdsa)
            write_pair(cert, key, cert_path, key_path)


def _still_good(cert_path: Path, key_path: Path, names: list[str]) -> bool:
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        current = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return False
    return _covers(current, names) and current.not_valid_after_utc - RENEW_BEFORE > _now()


def _dev_server_pairs(settings: Settings) -> list[tuple[Path, Path]]:
    return [(settings.tls_dir / SERVER_CERT, settings.tls_dir / SERVER_KEY),
            (settings.tls_dir / SERVER_EC_CERT, settings.tls_dir / SERVER_EC_KEY)]


def server_files(settings: Settings) -> tuple[Path, Path]:
    """The HTTPS port's certificate (chain) and key: the RSA one every phone can use."""
    if settings.tls_cert or settings.tls_key:
        if not (settings.tls_cert and settings.tls_key):
            raise TlsError("tls_cert and tls_key must be set together")
        return Path(settings.tls_cert), Path(settings.tls_key)
    return _dev_server_pairs(settings)[0]


def server_pairs(settings: Settings) -> list[tuple[Path, Path]]:
    """Every (certificate, key) the HTTPS port offers: server_files, then the ECDSA pair.

    With both loaded, OpenSSL answers a phone that offers ECDSA signatures with the ECDSA
    certificate, and older phones (Cisco SPA firmware speaks RSA only) with the RSA one. An
    ECDSA P-256 signature costs the server a fifteenth of an RSA-2048 one, and a fleet
    rebooting at once is mostly TLS handshakes.
    """
    pairs = [server_files(settings)]
    if settings.tls_ecdsa_cert or settings.tls_ecdsa_key:
        if not (settings.tls_ecdsa_cert and settings.tls_ecdsa_key):
            raise TlsError("tls_ecdsa_cert and tls_ecdsa_key must be set together")
        pairs.append((Path(settings.tls_ecdsa_cert), Path(settings.tls_ecdsa_key)))
    elif not settings.tls_cert:
        pairs.append(_dev_server_pairs(settings)[1])
    return pairs


def client_ca_files(settings: Settings) -> list[Path]:
    """The CA certificates phones' client certificates must chain to.

    tls_client_ca is a comma-separated list of PEM files or directories (every *.pem and *.crt
    in them), e.g. the Cisco, Yealink and Panasonic device CAs; empty means the development CA.
    """
    if not settings.tls_client_ca:
        return [dev_ca_path(settings)]
    files: list[Path] = []
    for item in (p.strip() for p in settings.tls_client_ca.split(",")):
        if not item:
            continue
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in (".pem", ".crt"))
        else:
            files.append(path)
    if not files:
        raise TlsError(f"tls_client_ca {settings.tls_client_ca!r} names no CA certificate")
    return files


def write_phone_cert(settings: Settings, mac: str, vendor: str, out_dir: Path) -> tuple[Path, Path]:
    """DIR/cert.pem and DIR/key.pem: a phone certificate signed by the development CA."""
    subject = phone_subject(vendor, mac)
    cert, key = issue_phone(dev_ca(settings), subject)
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / "cert.pem", out_dir / "key.pem"
    write_pair(cert, key, cert_path, key_path)
    return cert_path, key_path
