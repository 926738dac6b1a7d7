"""The plain-HTTP bootstrap port, and the HTTP details a fleet relies on (both ports)."""

from __future__ import annotations

import http.client
import socket
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from autoprov.config import Settings
from provisioning_wsgi import vendors, workers
from tests.conftest import RunningService, eventually
from tests.provisioning_helpers import (
    add_device,
    bootstrap_url,
    client,
    config_url,
    device_file,
    fetches,
    new_mac,
    phone_cert,
)

VENDORS = sorted(vendors.VENDORS)


def plain() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


@pytest.mark.parametrize("vendor", VENDORS)
def test_bootstrap_points_the_phone_at_the_tls_port_without_any_credential(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, vendor: str,
) -> None:
    sub = new_subscriber()
    mac = add_device(conn, vendor, [sub])

    reply = plain().get(bootstrap_url(settings, device_file(vendor, mac)))

    assert reply.status_code == 200
    assert sub.password not in reply.text and sub.username not in reply.text
    # The TLS port's address and path (Grandstream and Fanvil write them without the scheme,
    # Fanvil in two keys).
    assert f"{settings.public_host}:{settings.https_port}" in reply.text
    assert "device/autoprov/config/" in reply.text
    [(port, file, version, _addr, _ua)] = fetches(conn, mac)
    assert (port, file) == ("bootstrap", device_file(vendor, mac))
    assert reply.headers["ETag"] == f'"{version}"'


def test_yealink_bootstrap_turns_off_the_trusted_certificate_check(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any,
) -> None:
    mac = add_device(conn, "yealink", [new_subscriber()])

    for file in (f"{mac}.cfg", "y000000000108.cfg"):
        lines = plain().get(bootstrap_url(settings, file)).text.splitlines()
        assert lines[0] == "#!version:1.0.0.1"
        assert "static.security.trust_certificates = 0" in lines
        assert (f"static.auto_provision.server.url = https://{settings.public_host}:"
                f"{settings.https_port}/device/autoprov/config/") in lines
        assert "sip.notify_reboot_enable = 0" in lines


def test_resync_settings_that_make_phones_accept_check_sync(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    expected = {"cisco": "<Resync_From_SIP>Yes</Resync_From_SIP>",
                "yealink": "sip.notify_reboot_enable = 0",
                "panasonic": 'CFG_RESYNC_FROM_SIP="check-sync"'}
    for vendor, setting in expected.items():
        mac = add_device(conn, vendor, [new_subscriber()])
        file = device_file(vendor, mac)
        cert = phone_cert(settings, tmp_path / vendor, vendor, mac)
        assert setting in plain().get(bootstrap_url(settings, file)).text
        assert setting in client(settings, cert).get(config_url(settings, file)).text


@pytest.mark.parametrize("vendor,content_type", [
    ("cisco", "text/xml; charset=utf-8"),
    ("yealink", "text/plain; charset=utf-8"),
    ("panasonic", "text/plain; charset=utf-8"),
])
def test_etag_304_head_content_type_and_no_cookies(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path, vendor: str, content_type: str,
) -> None:
    mac = add_device(conn, vendor, [new_subscriber()])
    session = client(settings, phone_cert(settings, tmp_path, vendor, mac))
    url = config_url(settings, device_file(vendor, mac))

    full = session.get(url)
    again = session.get(url, headers={"If-None-Match": full.headers["ETag"]})
    listed = session.get(url, headers={"If-None-Match": f'"nope", W/{full.headers["ETag"]}'})
    stale = session.get(url, headers={"If-None-Match": '"something-else"'})
    head = session.head(url)

    assert full.status_code == 200
    assert full.headers["Content-Type"] == content_type
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == full.headers["ETag"]
    assert listed.status_code == 304
    assert stale.status_code == 200 and stale.content == full.content
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(full.content))
    assert head.headers["ETag"] == full.headers["ETag"]
    for reply in (full, again, head):
        assert "Set-Cookie" not in reply.headers
        assert reply.headers["Server"] == "autoprov"  # no software version for scanners
    # The 304 counts: the phone has the current config. HEAD fetches nothing.
    assert [f[0] for f in fetches(conn, mac)] == ["tls"] * 4


@pytest.mark.parametrize("file", [
    "001565000000.cfg", "0002fd000000.xml", "Config0080F0000000.cfg",  # no such device
])
def test_unknown_device_is_404_on_both_ports_without_saying_why(
    provisioning: RunningService, settings: Settings, tmp_path: Path, file: str,
) -> None:
    mac = file.removeprefix("Config")[:12].lower()
    cert = phone_cert(settings, tmp_path, "yealink", mac)

    on_plain = plain().get(bootstrap_url(settings, file))
    on_tls = client(settings, cert).get(config_url(settings, file))

    assert on_plain.status_code == on_tls.status_code == 404
    assert on_plain.text == on_tls.text == "404 not found\n"


def test_a_file_in_another_vendors_spelling_is_404_like_any_unknown_file(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any,
) -> None:
    mac = add_device(conn, "yealink", [new_subscriber()])

    reply = plain().get(bootstrap_url(settings, f"{mac}.xml"))  # a Cisco file name

    assert reply.status_code == 404 and reply.text == "404 not found\n"


NASTY = [
    "../../../../etc/passwd", "..%2f..%2fetc%2fpasswd", "%2e%2e/%2e%2e/etc/passwd",
    "001565aabbcc.cfg/../../x", ".001565aabbcc.cfg", "001565aabbcc.cfg%00.xml",
    "001565aabbcc.cfg\x00", "00156", "001565aabbccdd.cfg", "zz1565aabbcc.cfg", "x" * 5000,
    "%ff%fe.cfg", "caf\u00e9.cfg", "y00000000002.cfg", "Config.cfg", "spa.cfg", "",
    "001565aabbcc.cfg?x=1", "001565aabbcc.cfg;.xml", "a/b/c", "%", "%%", "%zz",
]


@pytest.mark.parametrize("path", NASTY)
@pytest.mark.parametrize("port", ["bootstrap", "tls"])
def test_traversal_and_malformed_names_are_404_never_500(
    provisioning: RunningService, settings: Settings, tmp_path_factory: pytest.TempPathFactory,
    path: str, port: str,
) -> None:
    status = raw_get(settings, port, path, tmp_path_factory.mktemp("cert"))

    assert status in (400, 404, 414), status


def raw_get(settings: Settings, port: str, path: str, cert_dir: Path) -> int:
    """The request line exactly as given: no client-side normalisation of the path."""
    prefix = "/device/autoprov/bootstrap/" if port == "bootstrap" else "/device/autoprov/config/"
    target = (prefix + path).encode("utf-8", "surrogateescape")
    if port == "bootstrap":
        conn: http.client.HTTPConnection = http.client.HTTPConnection(
            "127.0.0.1", settings.http_port, timeout=10)
    else:
        import ssl

        context = ssl.create_default_context(cafile=str(settings.tls_dir / "ca.pem"))
        context.check_hostname = False
        cert, key = phone_cert(settings, cert_dir, "yealink", "001565aabbcc")
        context.load_cert_chain(str(cert), str(key))
        conn = http.client.HTTPSConnection("127.0.0.1", settings.https_port, context=context,
                                           timeout=10)
    conn.connect()
    assert conn.sock is not None
    conn.sock.sendall(b"GET " + target.replace(b" ", b"%20") + b" HTTP/1.1\r\n"
                      b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
    response = http.client.HTTPResponse(conn.sock)
    response.begin()
    conn.close()
    return response.status


def test_other_paths_and_methods(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any,
) -> None:
    mac = add_device(conn, "yealink", [new_subscriber()])
    base = f"http://127.0.0.1:{settings.http_port}"

    assert plain().get(f"{base}/").status_code == 404
    # The full config is never on the plain port, not even under its URL.
    assert plain().get(f"{base}/device/autoprov/config/{mac}.cfg").status_code == 404
    post = plain().post(bootstrap_url(settings, f"{mac}.cfg"), data=b"x")
    assert post.status_code == 405 and post.headers["Allow"] == "GET, HEAD"


def test_plain_http_on_the_tls_port_gets_nothing(
    provisioning: RunningService, settings: Settings,
) -> None:
    with socket.create_connection(("127.0.0.1", settings.https_port), timeout=5) as sock:
        sock.sendall(b"GET /device/autoprov/config/001565aabbcc.cfg HTTP/1.0\r\n\r\n")
        data = sock.recv(4096)
    assert b"password" not in data and b"200" not in data


def test_the_service_answers_many_phones_at_once(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    phones = []
    for i in range(20):
        mac = add_device(conn, "yealink", [new_subscriber()])
        phones.append((mac, phone_cert(settings, tmp_path / str(i), "yealink", mac)))
    # A stalled client (TCP open, no TLS handshake) must not hold the others up.
    with socket.create_connection(("127.0.0.1", settings.https_port)):

        def fetch(phone: tuple[str, tuple[Path, Path]]) -> int:
            mac, cert = phone
            return client(settings, cert).get(config_url(settings, f"{mac}.cfg"),
                                              timeout=5).status_code

        with ThreadPoolExecutor(10) as pool:
            assert list(pool.map(fetch, phones)) == [200] * len(phones)
    assert all(len(fetches(conn, mac)) == 1 for mac, _ in phones)


def test_bootstrap_never_needs_a_known_phone_for_common_files(
    provisioning: RunningService, settings: Settings,
) -> None:
    for file in ("y000000000028.cfg", "ConfigCommon.cfg", "KX-HDV230.cfg", "spa502G.cfg"):
        assert plain().get(bootstrap_url(settings, file)).status_code == 200, file
    assert plain().get(bootstrap_url(settings, f"{new_mac('yealink')}.cfg")).status_code == 404


def test_a_bootstrap_file_fetched_again_within_seconds_is_one_record_but_every_get_is_logged(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    # The plain port is unauthenticated: anyone who knows a MAC could otherwise make the
    # database write a row per GET. Every TLS fetch is still a row (each may settle a resync).
    mac = add_device(conn, "yealink", [new_subscriber()])
    session = client(settings, phone_cert(settings, tmp_path, "yealink", mac))
    for _ in range(6):
        assert plain().get(bootstrap_url(settings, f"{mac}.cfg")).status_code == 200
    for _ in range(3):
        assert session.get(config_url(settings, f"{mac}.cfg")).status_code == 200

    ports = [row[0] for row in fetches(conn, mac)]
    # At most one row per worker process: each keeps its own memory of what it recorded.
    assert 1 <= ports.count("bootstrap") <= workers.count(settings.http_workers) < 6
    assert ports.count("tls") == 3
    line = f"port=bootstrap method=GET file={mac}.cfg status=200 device={mac}"
    deadline = time.monotonic() + 5
    while provisioning.log().count(line) < 6 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert provisioning.log().count(line) == 6


def test_old_fetch_records_are_pruned_but_each_ports_latest_stays(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    mac = add_device(conn, "yealink", [new_subscriber()])
    session = client(settings, phone_cert(settings, tmp_path, "yealink", mac))
    for _ in range(3):
        session.get(config_url(settings, f"{mac}.cfg"))
    plain().get(bootstrap_url(settings, f"{mac}.cfg"))
    eventually(lambda: len(fetches(conn, mac)) == 4)  # all recorded (a moment after)
    # All at one time: the front's request times have millisecond resolution, so a phone's
    # fetches on one kept-alive connection can tie; one row per port stays all the same.
    conn.execute("UPDATE autoprov.config_fetch SET fetched_at = now() - interval '100 days'"
                 " FROM autoprov.device d WHERE d.id = device_id AND d.mac = %s", (mac,))

    conn.execute("SELECT autoprov.prune_config_fetch(interval '90 days')")

    assert sorted(f[0] for f in fetches(conn, mac)) == ["bootstrap", "tls"]


def test_odd_bytes_in_a_user_agent_never_hold_up_the_fetch_records(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any,
) -> None:
    """A header value with tab, backslash or a non-ASCII byte is recorded as it came, and the
    fetches after it are recorded too. One with NUL is refused by the front (400, logged)."""
    odd, plain_mac, nul = (add_device(conn, "yealink", [new_subscriber()]) for _ in range(3))
    for mac, agent, status in ((odd, b"a\tc\\d\xe9", b"200"), (nul, b"a\x00b", b"400")):
        with socket.create_connection(("127.0.0.1", settings.http_port), timeout=5) as sock:
            sock.sendall(f"GET /device/autoprov/bootstrap/{mac}.cfg HTTP/1.0\r\n".encode()
                         + b"User-Agent: " + agent + b"\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 " + status + b" ")
    assert plain().get(bootstrap_url(settings, f"{plain_mac}.cfg")).status_code == 200

    [(_port, _file, _version, _addr, recorded)] = fetches(conn, odd)
    assert recorded == "a\tc\\d\u00e9"
    assert fetches(conn, nul) == []
    assert len(fetches(conn, plain_mac)) == 1
    provisioning.wait_for_log("denied client=127.0.0.1 port=bootstrap reason=bad-request")


@pytest.mark.parametrize(("vendor", "start"), [
    ("yealink", "#!version:1.0.0.1"),
    ("fanvil", "<<VOIP CONFIG FILE>>"),
    ("polycom", '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<APPLICATION '),
])
def test_a_file_name_several_vendors_ask_for_is_answered_in_the_devices_own_format(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, vendor: str, start: str,
) -> None:
    """Yealink, Fanvil and Poly phones all ask for <mac>.cfg: the device's vendor decides."""
    mac = add_device(conn, vendor, [new_subscriber()])

    reply = plain().get(bootstrap_url(settings, f"{mac}.cfg"))

    assert reply.status_code == 200
    assert reply.text.startswith(start), reply.text[:200]
