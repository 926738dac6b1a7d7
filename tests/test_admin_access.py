"""Who reaches the operators' pages, where, and what every answer carries (no browser here)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from autoprov.config import Settings
from tests.admin_helpers import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    admin_settings,
    admin_url,
    browser_session,
)
from tests.conftest import RunningService, autoprov_cli, start_provisioning
from tests.provisioning_helpers import (
    add_device,
    bootstrap_url,
    config_url,
    phone_cert,
    settle,
)

PAGES = ["/admin/", "/admin/bootstrap", "/admin/devices/0002fd000001",
         "/admin/api/fetches?mac=0002fd000001&after=0", "/admin/static/admin.js",
         "/admin/no-such-page", "/"]


@pytest.fixture(scope="module")
def admin(settings: Settings, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Settings, RunningService]]:
    own = admin_settings(tmp_path_factory.mktemp("admin-var"), settings)
    running = start_provisioning(own)
    yield own, running
    running.stop()


@pytest.mark.parametrize("path", PAGES)
def test_every_path_asks_for_credentials_and_shows_nothing_without_them(
    admin: tuple[Settings, RunningService], conn: psycopg.Connection[Any],
    new_subscriber: Any, path: str,
) -> None:
    own, _ = admin
    mac = add_device(conn, "cisco", [new_subscriber()])

    reply = browser_session(own, auth=None).get(admin_url(own, path), allow_redirects=False)

    assert reply.status_code == 401
    assert reply.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert mac not in reply.text and "<html" not in reply.text


def test_wrong_password_or_user_is_refused_and_logged_for_fail2ban(
    admin: tuple[Settings, RunningService],
) -> None:
    own, running = admin
    for auth in ((ADMIN_USER, "guess-" + ADMIN_PASSWORD), ("mallory", ADMIN_PASSWORD),
                 (ADMIN_USER, "")):
        reply = browser_session(own, auth=auth).get(admin_url(own, "/admin/"))
        assert reply.status_code == 401

    log = running.wait_for_log("reason=wrong-credentials")
    denied = [line for line in log.splitlines() if "reason=wrong-credentials path" in line]
    assert len(denied) >= 3
    assert all(re.search(r" WARNING denied client=127\.0\.0\.1 port=admin "
                         r"reason=wrong-credentials path=/admin/$", line) for line in denied)
    assert "guess-" not in log and ADMIN_PASSWORD not in log and "mallory" not in log


def test_the_right_credentials_open_the_pages(admin: tuple[Settings, RunningService],
                                              conn: psycopg.Connection[Any],
                                              new_subscriber: Any) -> None:
    own, _ = admin
    mac = add_device(conn, "yealink", [new_subscriber()])

    reply = browser_session(own).get(admin_url(own, "/admin/"))

    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
    assert f'href="/admin/devices/{mac}"' in reply.text


def test_pages_carry_security_headers_and_no_inline_script(
    admin: tuple[Settings, RunningService], conn: psycopg.Connection[Any], new_subscriber: Any,
) -> None:
    own, _ = admin
    mac = add_device(conn, "cisco", [new_subscriber()])
    session = browser_session(own)
    for path in ("/admin/", f"/admin/devices/{mac}", f"/admin/bootstrap?mac={mac}"):
        reply = session.get(admin_url(own, path))
        assert reply.status_code == 200
        csp = reply.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert reply.headers["X-Frame-Options"] == "DENY"
        assert reply.headers["Cache-Control"] == "no-store"
        assert reply.headers["Referrer-Policy"] == "same-origin"
        assert not re.search(r"<script(?![^>]*\ssrc=)", reply.text)  # no inline script
        assert not re.search(r"\son[a-z]+=", reply.text)  # no inline event handler
        assert " style=" not in reply.text


def test_pages_are_not_on_the_phones_ports(admin: tuple[Settings, RunningService],
                                           conn: psycopg.Connection[Any], new_subscriber: Any,
                                           tmp_path: Path) -> None:
    own, _ = admin
    mac = add_device(conn, "cisco", [new_subscriber()])
    plain = browser_session(own)

    assert plain.get(f"http://127.0.0.1:{own.http_port}/admin/").status_code == 404
    assert plain.get(bootstrap_url(own, "../../../admin/")).status_code == 404
    phone = browser_session(own)
    cert, key = phone_cert(own, tmp_path, "cisco", mac)
    phone.cert = (str(cert), str(key))
    assert phone.get(f"https://127.0.0.1:{own.https_port}/admin/").status_code == 404
    assert phone.get(config_url(own, "../../../admin/")).status_code == 404
    # Without a phone certificate the TLS port answers nothing but 403.
    reply = browser_session(own).get(f"https://127.0.0.1:{own.https_port}/admin/")
    assert (reply.status_code, reply.text) == (403, "403 forbidden\n")


def test_pages_are_off_without_a_password(provisioning: RunningService,
                                          settings: Settings) -> None:
    assert settings.admin_password == ""
    for auth in (None, ("admin", ""), (ADMIN_USER, ADMIN_PASSWORD)):
        for path in ("/admin/", "/admin/bootstrap", "/"):
            reply = browser_session(settings, auth=auth).get(admin_url(settings, path))
            assert reply.status_code == 404
            assert "WWW-Authenticate" not in reply.headers


def test_resync_form_needs_the_pages_token_and_origin(
    admin: tuple[Settings, RunningService], kamailio: RunningService,
    conn: psycopg.Connection[Any], new_subscriber: Any,
) -> None:
    own, running = admin
    mac = add_device(conn, "yealink", [new_subscriber()])
    session = browser_session(own)
    page = session.get(admin_url(own, f"/admin/devices/{mac}"))
    token = session.cookies["__Host-autoprov-csrf"]
    assert f'name="csrf" value="{token}"' not in page.text  # unregistered: no button
    action = admin_url(own, f"/admin/devices/{mac}/resync")
    origin = f"https://127.0.0.1:{own.admin_port}"

    assert session.post(action, data={}).status_code == 403
    assert session.post(action, data={"csrf": "x" * 43}).status_code == 403
    for origin_header in ("https://evil.example", "null"):
        assert session.post(action, data={"csrf": token},
                            headers={"Origin": origin_header}).status_code == 403
    # Another site's page posting with the browser's cookie jar cannot read the token.
    stranger = browser_session(own)
    stranger.cookies.set("__Host-autoprov-csrf", "y" * 43)
    assert stranger.post(action, data={"csrf": token}).status_code == 403
    asked = f"resync client=127.0.0.1 port=admin device={mac} request="
    assert asked not in running.log()
    assert "denied client=127.0.0.1 port=admin reason=csrf" in running.log()

    done = session.post(action, data={"csrf": token}, headers={"Origin": origin})
    assert done.status_code == 200 and done.url.endswith(f"/admin/devices/{mac}#resync")
    running.wait_for_log(asked)  # INFO lines are written in batches, a moment later
    assert "no registered contact; the NOTIFY goes out right after the next REGISTER" \
        in " ".join(done.text.split())


def test_fetch_poll_answers_json(admin: tuple[Settings, RunningService],
                                 conn: psycopg.Connection[Any], new_subscriber: Any) -> None:
    own, _ = admin
    mac = add_device(conn, "cisco", [new_subscriber()])
    session = browser_session(own)
    poll = admin_url(own, f"/admin/api/fetches?mac={mac}&after=0")

    assert session.get(poll).json() == {"mac": mac, "fetches": []}
    assert requests.get(bootstrap_url(own, f"{mac}.xml"), timeout=5).status_code == 200
    settle()  # fetch records are written in batches
    [fetch] = session.get(poll).json()["fetches"]
    assert (fetch["port"], fetch["file"], fetch["client_addr"]) == \
        ("bootstrap", f"{mac}.xml", "127.0.0.1")
    after = admin_url(own, f"/admin/api/fetches?mac={mac}&after={fetch['id']}")
    assert session.get(after).json()["fetches"] == []
    assert session.get(admin_url(own, "/admin/api/fetches?mac=nope")).status_code == 400
    assert session.get(admin_url(own, "/admin/api/fetches?mac=0002fdffffff&after=0")
                       ).status_code == 404


def test_resync_of_an_unregistered_cisco_points_to_the_bootstrap_page(
    admin: tuple[Settings, RunningService], settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any,
) -> None:
    own, _ = admin
    cisco = add_device(conn, "cisco", [new_subscriber()])
    yealink = add_device(conn, "yealink", [new_subscriber()])
    page = f"https://{own.public_host}:{own.admin_port}/admin/bootstrap?mac={cisco}"

    text = autoprov_cli(own, "resync", cisco)
    assert text.returncode == 0
    assert "no line of this device is registered" in text.stdout
    assert page in text.stdout and "admin_password" not in text.stdout
    as_json = json.loads(autoprov_cli(own, "resync", cisco, "--json").stdout)
    assert as_json["bootstrap_page"] == page

    other = autoprov_cli(own, "resync", yealink)
    assert "/admin/bootstrap" not in other.stdout
    assert "bootstrap_page" not in json.loads(autoprov_cli(own, "resync", yealink,
                                                           "--json").stdout)
    # Pages off: the address still, and what turns them on.
    off = autoprov_cli(settings, "resync", cisco).stdout
    assert "/admin/bootstrap?mac=" in off and "set admin_password" in off
