"""A phone's own files are answered by the web front from the publisher's files (issue 19):
with every app worker stopped, phones still get current configs, each fetch recorded once with
the version served, and a certificate still opens only its own MAC's files."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from autoprov import front
from autoprov.config import Settings
from provisioning_wsgi import publish
from tests.conftest import RunningService, eventually, make_settings, start_provisioning
from tests.provisioning_helpers import (
    add_device,
    app_workers,
    bootstrap_url,
    client,
    config_url,
    device_file,
    fetches,
    phone_cert,
    publisher_pid,
)


@pytest.fixture
def service(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, RunningService]]:
    own = make_settings(tmp_path / "var", db_url=settings.db_url, http_workers=2)
    running = start_provisioning(own)
    yield own, running
    running.stop()


def _wait_published(own: Settings, port: str, mac: str, name: str) -> None:
    folder = publish.root(own) / publish.LIVE / port
    if port == "tls":
        folder /= mac
    eventually(lambda: any(folder.glob(f"{name}.*")), timeout=60)


def test_phones_get_current_files_with_every_app_worker_stopped(
    service: tuple[Settings, RunningService], conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    own, running = service
    sub = new_subscriber()
    mac = add_device(conn, "cisco", [sub])
    name = device_file("cisco", mac)
    phone = client(own, phone_cert(own, tmp_path, "cisco", mac))
    _wait_published(own, "tls", mac, name)
    _wait_published(own, "bootstrap", mac, name)
    workers = app_workers(running.service.process.pid, running.log())
    assert len(workers) == 2
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        plain = client(own).get(bootstrap_url(own, name), timeout=5)
        full = phone.get(config_url(own, name), timeout=5,
                         headers={"User-Agent": "Cisco/SPA504G-7.6.2"})
        again = phone.get(config_url(own, name), timeout=5,
                          headers={"If-None-Match": full.headers.get("ETag", "")})
        assert plain.status_code == 200 and sub.password not in plain.text
        assert full.status_code == 200 and sub.password in full.text
        assert again.status_code == 304
        for reply in (plain, full):
            assert reply.headers["Content-Type"] == "text/xml; charset=utf-8"
            assert reply.headers["Server"] == "autoprov"
            assert reply.headers["Cache-Control"] == "no-cache"
            assert "Last-Modified" not in reply.headers
        recorded = eventually(lambda: len(fetches(conn, mac)) == 3 and fetches(conn, mac))
        assert [(r[0], r[1], f'"{r[2]}"') for r in recorded] == [
            ("bootstrap", name, plain.headers["ETag"]), ("tls", name, full.headers["ETag"]),
            ("tls", name, full.headers["ETag"])]
        assert recorded[1][4] == "Cisco/SPA504G-7.6.2"
        assert f"port=tls method=GET file={name} status=200 device={mac}" in running.log()

        # A change made in SQL reaches the phone, the app still stopped.
        conn.execute("UPDATE subscriber SET password = 'changed-in-sql' WHERE username = %s",
                      (sub.username,))
        # (Until the new file is published the front hands the request to the app, stopped.)
        folder = publish.root(own) / publish.LIVE / "tls" / mac
        eventually(lambda: any(b"changed-in-sql" in p.read_bytes() for p in folder.iterdir()))
        changed = phone.get(config_url(own, name), timeout=5)
        assert "changed-in-sql" in changed.text
        assert changed.headers["ETag"] != full.headers["ETag"]
        assert sub.password not in changed.text
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)


def test_a_certificate_opens_only_its_own_macs_published_files(
    service: tuple[Settings, RunningService], conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    own, running = service
    mine, theirs = (add_device(conn, "yealink", [new_subscriber()]) for _ in range(2))
    for mac in (mine, theirs):
        _wait_published(own, "tls", mac, device_file("yealink", mac))
    phone = client(own, phone_cert(own, tmp_path, "yealink", mine))

    assert phone.get(config_url(own, device_file("yealink", mine))).status_code == 200
    refused = phone.get(config_url(own, device_file("yealink", theirs)))

    assert refused.status_code == 403
    running.wait_for_log(
        f"reason=certificate-names-another-device file={device_file('yealink', theirs)}")
    assert [row[0] for row in fetches(conn, theirs)] == []


def test_fetches_answered_while_the_publisher_was_dead_are_recorded_once(
    service: tuple[Settings, RunningService], conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    own, running = service
    mac = add_device(conn, "yealink", [new_subscriber()])
    name = device_file("yealink", mac)
    _wait_published(own, "tls", mac, name)
    phone = client(own, phone_cert(own, tmp_path, "yealink", mac))
    assert phone.get(config_url(own, name)).status_code == 200
    eventually(lambda: len(fetches(conn, mac)) == 1)
    first = publisher_pid(running.log())

    os.kill(first, signal.SIGKILL)
    while_dead = [phone.get(config_url(own, name)).status_code for _ in range(5)]
    eventually(lambda: publisher_pid(running.log()) != first, timeout=15)
    after = phone.get(config_url(own, name)).status_code

    assert while_dead == [200] * 5 and after == 200
    eventually(lambda: len(fetches(conn, mac)) == 7, timeout=15)
    assert len(fetches(conn, mac)) == 7  # settled: none twice


def test_the_fetch_log_is_rotated_and_no_fetch_is_lost_or_recorded_twice(
    settings: Settings, conn: psycopg.Connection[Any], new_subscriber: Any, tmp_path: Path,
) -> None:
    own = make_settings(tmp_path / "var", db_url=settings.db_url, http_workers=1,
                        fetch_log_rotate_kb=4)
    running = start_provisioning(own)
    try:
        mac = add_device(conn, "yealink", [new_subscriber()])
        name = device_file("yealink", mac)
        _wait_published(own, "tls", mac, name)
        phone = client(own, phone_cert(own, tmp_path, "yealink", mac))
        for _ in range(3):  # each past 4 KB of lines
            assert {phone.get(config_url(own, name)).status_code for _ in range(40)} == {200}
            time.sleep(0.3)

        eventually(lambda: len(fetches(conn, mac)) >= 120, timeout=15)
        assert len(fetches(conn, mac)) == 120
        assert running.log().count("fetch log rotated") >= 2
        old = front.fetch_log_path(own).with_name("fetches.log.old")
        eventually(lambda: not old.exists(), timeout=10)
        assert phone.get(config_url(own, name)).status_code == 200  # nginx writes the new one
        eventually(lambda: len(fetches(conn, mac)) == 121)
    finally:
        running.stop()


def test_a_certificate_spelling_the_mac_with_colons_is_checked_by_the_app_and_served(
    service: tuple[Settings, RunningService], conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    """The front reads only a 12-digit MAC from a subject; any other spelling the app accepts
    still gets the phone its file (from the app), and still only its own."""
    own, _running = service
    mine, theirs = (add_device(conn, "yealink", [new_subscriber()]) for _ in range(2))
    for mac in (mine, theirs):
        _wait_published(own, "tls", mac, device_file("yealink", mac))
    colons = ":".join(mine[i:i + 2] for i in range(0, 12, 2)).upper()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"SIP phone {colons}")])
    phone = client(own, phone_cert(own, tmp_path, "yealink", mine, subject=subject))

    assert phone.get(config_url(own, device_file("yealink", mine))).status_code == 200
    assert phone.get(config_url(own, device_file("yealink", theirs))).status_code == 403
