"""The HTTPS port: a phone proves its MAC with its client certificate and gets its lines."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from autoprov import tls
from autoprov.config import Settings
from provisioning_wsgi import vendors
from tests.conftest import RunningService
from tests.provisioning_helpers import (
    add_device,
    client,
    config_url,
    device_file,
    fetches,
    new_mac,
    phone_cert,
    settle,
)

VENDORS = sorted(vendors.VENDORS)


@pytest.mark.parametrize("vendor", VENDORS)
def test_phone_with_its_own_certificate_gets_its_lines_with_credentials(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path, vendor: str,
) -> None:
    alice, bob = new_subscriber(), new_subscriber()
    mac = add_device(conn, vendor, [alice, bob])
    cert = phone_cert(settings, tmp_path, vendor, mac)

    reply = client(settings, cert).get(config_url(settings, device_file(vendor, mac)),
                                       headers={"User-Agent": f"{vendor}-phone/1.0"})

    assert reply.status_code == 200
    for sub in (alice, bob):
        assert sub.username in reply.text
        assert sub.password in reply.text
    assert "set-cookie" not in reply.headers
    [(port, file, version, client_addr, user_agent)] = fetches(conn, mac)
    assert (port, file, client_addr, user_agent) == \
        ("tls", device_file(vendor, mac), "127.0.0.1", f"{vendor}-phone/1.0")
    assert reply.headers["ETag"] == f'"{version}"'


@pytest.mark.parametrize("vendor", VENDORS)
def test_certificate_of_another_phone_is_forbidden_and_logged_for_fail2ban(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path, vendor: str,
) -> None:
    victim = new_subscriber()
    mac = add_device(conn, vendor, [victim])
    other = add_device(conn, vendor, [new_subscriber()])
    cert = phone_cert(settings, tmp_path, vendor, other)
    file = device_file(vendor, mac)

    reply = client(settings, cert).get(config_url(settings, file))

    assert reply.status_code == 403
    assert victim.password not in reply.text and victim.username not in reply.text
    log = provisioning.wait_for_log(f"file={file}")
    line = next(x for x in log.splitlines() if "denied" in x and f"file={file}" in x)
    assert (" denied client=127.0.0.1 port=tls reason=certificate-names-another-device"
            f" file={file}") in line
    assert victim.password not in log
    assert fetches(conn, mac) == []


def test_common_files_need_a_certificate_but_no_particular_mac(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    cert = phone_cert(settings, tmp_path, "yealink", new_mac("yealink"))
    session = client(settings, cert)

    for file in ("y000000000108.cfg", "ConfigCommon.cfg", "ConfigKX-UT136.cfg", "spa504G.cfg"):
        reply = session.get(config_url(settings, file))
        assert reply.status_code == 200, file
        assert f"127.0.0.1:{settings.https_port}" not in reply.text  # public_host, not ours
        assert f"{settings.public_host}:{settings.https_port}" in reply.text


def refused(settings: Settings, cert: tuple[Path, Path] | None, file: str) -> bool:
    """Forbidden, and nothing of the file: the front completes the handshake (it asks for a
    certificate but lets the app refuse it, so that the refusal is logged as the others)."""
    reply = client(settings, cert).get(config_url(settings, file), timeout=10)
    return reply.status_code == 403 and reply.text == "403 forbidden\n"


def test_without_a_client_certificate_the_request_is_refused(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any,
) -> None:
    mac = add_device(conn, "yealink", [new_subscriber()])

    assert refused(settings, None, f"{mac}.cfg")
    provisioning.wait_for_log("denied client=127.0.0.1 port=tls reason=tls-handshake "
                              "detail=peer-did-not-return-a-certificate")


def test_a_certificate_from_an_unknown_ca_is_refused(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    mac = add_device(conn, "cisco", [new_subscriber()])
    stranger = tls.make_ca("someone else's CA")
    cert = phone_cert(settings, tmp_path, "cisco", mac, ca=stranger)

    assert refused(settings, cert, f"{mac}.xml")
    provisioning.wait_for_log("detail=unable-to-verify-the-first-certificate")
    assert fetches(conn, mac) == []


def test_an_expired_certificate_is_refused(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    mac = add_device(conn, "panasonic", [new_subscriber()])
    now = dt.datetime.now(dt.UTC)
    cert = phone_cert(settings, tmp_path, "panasonic", mac,
                      not_before=now - dt.timedelta(days=400),
                      not_after=now - dt.timedelta(days=1))

    assert refused(settings, cert, f"Config{mac.upper()}.cfg")
    provisioning.wait_for_log("detail=certificate-has-expired")
    assert fetches(conn, mac) == []


@pytest.mark.parametrize("spelling", ["ST+CN upper-case", "CN colons", "serialNumber suffix"])
def test_the_mac_is_found_wherever_vendors_put_it_in_the_subject(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path, spelling: str,
) -> None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    mac = add_device(conn, "yealink", [new_subscriber()])
    colons = ":".join(mac[i:i + 2] for i in range(0, 12, 2))
    attrs = {
        "ST+CN upper-case": [(NameOID.STATE_OR_PROVINCE_NAME, mac.upper()),
                             (NameOID.COMMON_NAME, f"SPA-525G2, MAC: {mac.upper()}, Serial: X")],
        "CN colons": [(NameOID.COMMON_NAME, colons)],
        "serialNumber suffix": [(NameOID.COMMON_NAME, "yealink.com"),
                                (NameOID.SERIAL_NUMBER, f"ffffffff-ffff-ffff-fff0-{mac}")],
    }[spelling]
    subject = x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs])
    cert = phone_cert(settings, tmp_path, "yealink", mac, subject=subject)

    assert client(settings, cert).get(config_url(settings, f"{mac}.cfg")).status_code == 200


def test_a_mac_inside_a_longer_hex_string_does_not_count(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    mac = add_device(conn, "yealink", [new_subscriber()])
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ab{mac}cd")])
    cert = phone_cert(settings, tmp_path, "yealink", mac, subject=subject)

    assert client(settings, cert).get(config_url(settings, f"{mac}.cfg")).status_code == 403


def test_a_phone_that_fetched_after_a_change_is_told_apart_from_one_that_did_not(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    sub = new_subscriber()
    mac = add_device(conn, "yealink", [sub])
    session = client(settings, phone_cert(settings, tmp_path, "yealink", mac))
    first = session.get(config_url(settings, f"{mac}.cfg"))
    conn.execute("UPDATE subscriber SET password = 'rotated-pw-1' WHERE username = %s",
                 (sub.username,))
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    changed_at = row[0]
    fetched_since = ("SELECT EXISTS (SELECT 1 FROM autoprov.config_fetch f"
                     " JOIN autoprov.device d ON d.id = f.device_id"
                     " WHERE d.mac = %s AND f.port = 'tls' AND f.fetched_at > %s)")

    settle()
    assert conn.execute(fetched_since, (mac, changed_at)).fetchone() == (False,)
    second = session.get(config_url(settings, f"{mac}.cfg"),
                         headers={"If-None-Match": first.headers["ETag"]})

    assert second.status_code == 200  # the config changed, so the old ETag no longer matches
    assert "rotated-pw-1" in second.text
    settle()
    assert conn.execute(fetched_since, (mac, changed_at)).fetchone() == (True,)


def test_each_fetch_records_exactly_which_changes_the_phone_got(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    """A change begun before a fetch but committed after it is not in what the phone got.

    The fetch's time cannot tell (the change's now() is older than the fetch); the recorded
    snapshot can.
    """
    from autoprov import db

    sub = new_subscriber(password="before-change")
    mac = add_device(conn, "yealink", [sub])
    session = client(settings, phone_cert(settings, tmp_path, "yealink", mac))
    # Steady state: the phone has its config, nothing is pending for it.
    assert session.get(config_url(settings, f"{mac}.cfg")).status_code == 200
    got = ("SELECT pg_visible_in_snapshot(%s::xid8, f.read_snapshot), f.fetched_at > %s"
           "  FROM autoprov.config_fetch f JOIN autoprov.device d ON d.id = f.device_id"
           " WHERE d.mac = %s ORDER BY f.id OFFSET 1")  # the steady-state fetch left out
    with db.connect(settings) as change:  # a DBA's transaction, left open for a moment
        change.execute("UPDATE subscriber SET password = 'after-change' WHERE username = %s",
                       (sub.username,))
        row = change.execute("SELECT pg_current_xact_id()::text, now()").fetchone()
        assert row is not None
        xid, began = row

        during = session.get(config_url(settings, f"{mac}.cfg"))
        change.commit()
    # The service hears of the commit by NOTIFY a moment after it (README: "How a phone gets
    # its config"); a fetch inside that moment gets, and records, the config before it.
    deadline = time.monotonic() + 2
    while "after-change" not in session.get(config_url(settings, f"{mac}.cfg")).text:
        assert time.monotonic() < deadline, "the change was never served"

    assert "before-change" in during.text
    settle()
    recorded = conn.execute(got, (xid, began, mac)).fetchall()
    assert recorded[0] == (False, True)  # later in time, yet without the change
    assert recorded[-1] == (True, True)
    # Every fetch that got the old config says so, exactly.
    assert all(visible is False for visible, _later in recorded[:-1])


def _get_over_tls(settings: Settings, context: ssl.SSLContext, path: str,
                  session: ssl.SSLSession | None, server_name: str | None = None,
                  ) -> tuple[bytes, ssl.SSLSession | None, bool]:
    """One GET on its own TLS connection; the response, the session to resume, resumed?"""
    with socket.create_connection(("127.0.0.1", settings.https_port), timeout=5) as raw, \
            context.wrap_socket(raw, session=session, server_hostname=server_name) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: autoprov\r\nConnection: close\r\n\r\n"
                     .encode())
        response = b""
        while chunk := conn.recv(65536):
            response += chunk
        return response, conn.session, conn.session_reused


def test_a_phone_resumes_its_tls_session_for_its_next_file_and_is_still_itself(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    """The server issues a TLS 1.3 ticket; a resumed session still carries the phone's own
    certificate, so it opens that phone's file and no other."""
    mac, other = (add_device(conn, "yealink", [new_subscriber()]) for _ in range(2))
    context = ssl.create_default_context(cafile=str(tls.dev_ca_path(settings)))
    context.check_hostname = False
    context.load_cert_chain(*(str(p) for p in phone_cert(settings, tmp_path, "yealink", mac)))
    path = f"/device/autoprov/config/{device_file('yealink', mac)}"

    first, session, resumed = _get_over_tls(settings, context, path, None)
    assert first.startswith(b"HTTP/1.1 200 ") and not resumed
    # Several times: each connection may reach another worker process, and all share the key.
    for _ in range(6):
        again, session, resumed = _get_over_tls(settings, context, path, session)
        assert resumed
        assert again.split(b"\r\n\r\n", 1)[1] == first.split(b"\r\n\r\n", 1)[1]
    elsewhere, _, resumed = _get_over_tls(
        settings, context, f"/device/autoprov/config/{device_file('yealink', other)}", session)
    assert resumed
    assert elsewhere.startswith(b"HTTP/1.1 403 ")


def test_a_phone_that_names_the_server_in_its_handshake_gets_its_file(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    """Firmware connecting to a host name sends it (SNI) in the handshake; the server answers
    whatever the name, with the same certificate check."""
    mac = add_device(conn, "yealink", [new_subscriber()])
    context = ssl.create_default_context(cafile=str(tls.dev_ca_path(settings)))
    context.check_hostname = False
    context.load_cert_chain(*(str(p) for p in phone_cert(settings, tmp_path, "yealink", mac)))

    for name in ("localhost", "provisioning.example.net"):
        reply, _, _ = _get_over_tls(
            settings, context, f"/device/autoprov/config/{device_file('yealink', mac)}", None,
            server_name=name)
        assert reply.startswith(b"HTTP/1.1 200 ")
