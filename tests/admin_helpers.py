"""The operators' pages under test: a provisioning service with them turned on, and clients."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from autoprov import tls
from autoprov.config import Settings
from tests.conftest import make_settings

ADMIN_USER = "operator"
ADMIN_PASSWORD = "correct horse battery staple"


def admin_settings(base: Path, settings: Settings, **overrides: object) -> Settings:
    """Own ports, var/ (so its own log and development CA) and the session's database."""
    values: dict[str, object] = {"admin_user": ADMIN_USER, "admin_password": ADMIN_PASSWORD}
    values.update(overrides)
    return make_settings(base, db_url=settings.db_url, **values)


def admin_url(settings: Settings, path: str) -> str:
    return f"https://127.0.0.1:{settings.admin_port}{path}"


def browser_session(settings: Settings, auth: tuple[str, str] | None = (ADMIN_USER,
                                                                        ADMIN_PASSWORD)
                    ) -> requests.Session:
    """A client of the admin port that verifies the server as a browser with the CA would."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(tls.dev_ca_path(settings))
    if auth is not None:
        session.auth = auth
    return session


def server_spki_hash(settings: Settings) -> str:
    """For Chromium's --ignore-certificate-errors-spki-list: trust this server's key only."""
    cert = x509.load_pem_x509_certificate(tls.server_files(settings)[0].read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()
