"""Old Cisco SPA firmware speaks only TLS 1.0: `tls_min_version = "1.0"` lets it in on the
phones' TLS port; by default (1.2) such a phone cannot connect at all."""

from __future__ import annotations

import socket
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from autoprov import front, tls
from autoprov.config import Settings
from tests.conftest import RunningService, make_settings, start_provisioning
from tests.provisioning_helpers import add_device, device_file, fetches, phone_cert


@pytest.fixture(scope="module")
def old_firmware_allowed(settings: Settings, tmp_path_factory: pytest.TempPathFactory
                         ) -> Iterator[Settings]:
    own = make_settings(tmp_path_factory.mktemp("tls10") / "var", db_url=settings.db_url,
                        tls_min_version="1.0", http_workers=1)
    running: RunningService = start_provisioning(own)
    yield own
    running.stop()


def tls10_get(settings: Settings, cert: tuple[Path, Path], path: str) -> tuple[str, bytes]:
    """One GET as an old SPA does it: TLS 1.0 only, with the ciphers of its day."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with warnings.catch_warnings():  # deprecated, as the firmware we stand in for is
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_verify_locations(tls.dev_ca_path(settings))
    context.check_hostname = False
    context.load_cert_chain(*cert)
    with socket.create_connection(("127.0.0.1", settings.https_port), timeout=10) as raw, \
            context.wrap_socket(raw) as conn:
        conn.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
        return str(conn.version()), answer


def test_a_tls_1_0_phone_gets_its_config_when_allowed(
    old_firmware_allowed: Settings, conn: psycopg.Connection[Any], new_subscriber: Any,
    tmp_path: Path,
) -> None:
    own = old_firmware_allowed
    line = new_subscriber()
    mac = add_device(conn, "cisco", [line])
    cert = phone_cert(own, tmp_path, "cisco", mac)

    version, answer = tls10_get(own, cert, f"/device/autoprov/config/{device_file('cisco', mac)}")

    assert version == "TLSv1"
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert line.password.encode() in answer
    assert [f[0] for f in fetches(conn, mac)] == ["tls"]


def test_by_default_a_tls_1_0_phone_cannot_connect(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    assert settings.tls_min_version == "1.2"
    mac = add_device(conn, "cisco", [new_subscriber()])
    cert = phone_cert(settings, tmp_path, "cisco", mac)

    with pytest.raises(ssl.SSLError):
        tls10_get(settings, cert, f"/device/autoprov/config/{device_file('cisco', mac)}")
    assert fetches(conn, mac) == []


def test_an_unknown_version_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(front.FrontError) as refused:
        front.config(settings.replace(tls_min_version="1.5"))
    assert str(refused.value) == "tls_min_version '1.5': one of 1.0, 1.1, 1.2, 1.3"
