"""Phones that ask for a config nobody created: remembered (MAC, vendor from the file name, model
and firmware from the User-Agent, address, times, count), bounded, listed by
`autoprov device unknown` and the operators' page, adopted only by an operator."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from autoprov.config import Settings
from tests.admin_helpers import admin_settings, admin_url, browser_session
from tests.conftest import autoprov_cli, eventually, start_provisioning
from tests.provisioning_helpers import client, config_url, new_mac, phone_cert

YEALINK_UA = "Yealink SIP-T46U 108.86.0.90 00:15:65:aa:bb:cc"


@pytest.fixture(scope="module")
def served(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The service with its operators' pages on (a stack of its own, the session's database)."""
    own = admin_settings(tmp_path_factory.mktemp("unknown-var"), settings)
    running = start_provisioning(own)
    yield own
    running.stop()


def _fetch_plain(settings: Settings, file: str, source: str, agent: str = YEALINK_UA) -> int:
    """A phone's GET on the plain port, from a source address of the test's own."""
    conn = http.client.HTTPConnection("127.0.0.1", settings.http_port, timeout=10,
                                      source_address=(source, 0))
    try:
        conn.request("GET", f"/device/autoprov/bootstrap/{file}", headers={"User-Agent": agent})
        return conn.getresponse().status
    finally:
        conn.close()


def _unknown(settings: Settings) -> dict[str, dict[str, Any]]:
    result = autoprov_cli(settings, "device", "unknown", "--json")
    assert result.returncode == 0, result.stderr
    return {row["mac"]: row for row in json.loads(result.stdout)}


def _device_count(conn: psycopg.Connection[Any], mac: str) -> int:
    row = conn.execute("SELECT count(*) FROM autoprov.device WHERE mac = %s", (mac,)).fetchone()
    return int(row[0]) if row else 0


def test_a_phone_nobody_created_is_listed_and_not_created(
    served: Settings, conn: psycopg.Connection[Any]
) -> None:
    settings = served
    mac = new_mac("yealink")
    assert _fetch_plain(settings, f"{mac}.cfg", "127.0.0.77") == 404  # today's answer

    assert eventually(lambda: mac in _unknown(settings), timeout=5)
    row = _unknown(settings)[mac]
    assert (row["vendor"], row["model"], row["firmware"], row["address"], row["fetch_count"]) \
        == ("yealink", "T46U", "108.86.0.90", "127.0.0.77", 1)
    assert _device_count(conn, mac) == 0

    assert _fetch_plain(settings, f"{mac}.cfg", "127.0.0.77") == 404
    assert eventually(lambda: _unknown(settings)[mac]["fetch_count"] == 2, timeout=5)
    again = _unknown(settings)[mac]
    assert again["last_seen"] >= row["last_seen"] and again["first_seen"] == row["first_seen"]
    assert _device_count(conn, mac) == 0

    text = autoprov_cli(settings, "device", "unknown").stdout
    assert f"{mac}  yealink" in text and "108.86.0.90" in text


def test_a_phone_with_its_certificate_on_the_tls_port_is_listed_too(
    served: Settings, conn: psycopg.Connection[Any], tmp_path: Path,
) -> None:
    settings = served
    mac = new_mac("grandstream")
    cert = phone_cert(settings, tmp_path, "grandstream", mac)
    reply = client(settings, cert).get(
        config_url(settings, f"cfg{mac}.xml"),
        headers={"User-Agent": "Grandstream Model HW GRP2614 SW 1.0.5.15 DevId " + mac})
    assert reply.status_code == 404

    assert eventually(lambda: mac in _unknown(settings), timeout=5)
    row = _unknown(settings)[mac]
    assert (row["vendor"], row["model"], row["firmware"]) == ("grandstream", "GRP2614", "1.0.5.15")
    assert _device_count(conn, mac) == 0


def test_adopting_through_the_page_creates_the_device_with_its_lines(
    served: Settings, conn: psycopg.Connection[Any], new_subscriber: Any,
) -> None:
    settings = served
    mac = new_mac("yealink")
    sub = new_subscriber()
    assert _fetch_plain(settings, f"{mac}.cfg", "127.0.0.77") == 404
    assert eventually(lambda: mac in _unknown(settings), timeout=5)
    admin = browser_session(settings)

    page = admin.get(admin_url(settings, "/admin/unknown"))
    assert page.status_code == 200 and f'id="adopt-{mac}"' in page.text
    form = admin.get(admin_url(settings, f"/admin/devices/new?mac={mac}&vendor=yealink"
                                         "&model=T46U"))
    assert form.status_code == 200
    assert f'value="{mac}"' in form.text and 'value="T46U"' in form.text
    assert "<option selected>yealink</option>" in form.text

    token = admin.cookies["__Host-autoprov-csrf"]
    created = admin.post(admin_url(settings, "/admin/devices"), data={
        "csrf": token, "mac": mac, "vendor": "yealink", "model": "T46U",
        "line-1-number": "1", "line-1-subscriber": sub.aor, "line-1-name": ""},
        headers={"Origin": f"https://127.0.0.1:{settings.admin_port}"})
    assert created.status_code == 200, created.text[:500]
    assert _device_count(conn, mac) == 1
    assert mac not in _unknown(settings)
    assert mac not in admin.get(admin_url(settings, "/admin/unknown")).text


def test_one_address_cannot_fill_the_list(
    served: Settings, conn: psycopg.Connection[Any]
) -> None:
    settings = served
    source = "127.0.0.78"
    macs = [new_mac("yealink") for _ in range(130)]
    for mac in macs:
        assert _fetch_plain(settings, f"{mac}.cfg", source) == 404

    def count() -> int:
        row = conn.execute("SELECT count(*) FROM autoprov.unknown_device WHERE address = %s",
                           (source,)).fetchone()
        return int(row[0]) if row else 0

    assert eventually(lambda: count() >= 100, timeout=5)
    time.sleep(1.5)  # another write of the service's would show here
    assert count() == 100
    conn.execute("DELETE FROM autoprov.unknown_device WHERE address = %s", (source,))
