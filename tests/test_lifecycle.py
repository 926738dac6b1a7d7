"""A phone's whole life across both services: fetch over TLS, register, password rotation."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from autoprov import db
from autoprov.config import Settings
from tests.conftest import RunningService
from tests.provisioning_helpers import client, config_url, phone_cert, settle
from tests.test_resync import add_device, wait_pending_in_proxy


def fetch_full_config(settings: Settings, tmp_path: Path, mac: str) -> str:
    cert = phone_cert(settings, tmp_path / mac, "yealink", mac)
    answer = client(settings, cert).get(config_url(settings, f"{mac}.cfg"), timeout=10)
    assert answer.status_code == 200
    return answer.text


def request_state(conn: psycopg.Connection[Any], mac: str) -> str:
    row = conn.execute("SELECT r.state FROM autoprov.resync_request r JOIN autoprov.device d"
                       " ON d.id = r.device_id WHERE d.mac = %s ORDER BY r.id DESC LIMIT 1",
                       (mac,)).fetchone()
    return str(row[0]) if row else ""


def test_new_phone_fetches_registers_and_needs_no_notify(
    kamailio: RunningService, provisioning: RunningService, settings: Settings,
    conn: psycopg.Connection[Any], new_subscriber: Any, phone_for: Any, tmp_path: Path,
) -> None:
    sub = new_subscriber()
    mac = add_device(settings, sub)
    wait_pending_in_proxy(settings, sub.aor)

    config = fetch_full_config(settings, tmp_path, mac)

    assert f"account.1.password = {sub.password}" in config
    settle()
    assert request_state(conn, mac) == "fetched"
    assert phone_for(sub).register().ok
    time.sleep(0.5)
    assert conn.execute("SELECT count(*) FROM autoprov.resync_status WHERE mac = %s"
                        " AND outcome IS NOT NULL", (mac,)).fetchone() == (0,)


def test_old_password_works_until_the_phone_fetched_the_new_one(
    kamailio: RunningService, provisioning: RunningService, settings: Settings,
    conn: psycopg.Connection[Any], new_subscriber: Any, phone_for: Any, tmp_path: Path,
) -> None:
    sub = new_subscriber()
    mac = add_device(settings, sub)
    fetch_full_config(settings, tmp_path, mac)
    conn.execute("UPDATE subscriber SET password = 'rotated-pw' WHERE username = %s",
                 (sub.username,))
    old_phone = phone_for(sub)
    assert old_phone.register().ok  # still holds the old password

    config = fetch_full_config(settings, tmp_path, mac)

    assert "account.1.password = rotated-pw" in config
    assert old_phone.run("register-refused").ok
    assert dataclasses.replace(old_phone, password="rotated-pw").register().ok


def test_a_change_still_being_made_during_a_fetch_is_not_taken_as_delivered(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    sub = new_subscriber()
    mac = add_device(settings, sub)
    fetch_full_config(settings, tmp_path, mac)
    with db.connect(settings) as dba:  # a DBA's open transaction
        dba.execute("UPDATE subscriber SET password = 'slow-rotation' WHERE username = %s",
                    (sub.username,))
        fetched: list[str] = []
        fetcher = threading.Thread(
            target=lambda: fetched.append(fetch_full_config(settings, tmp_path, mac)))
        fetcher.start()
        fetcher.join(timeout=10)
        assert fetched, "the phone's fetch waited on the DBA's transaction"
        dba.commit()
    settle()  # the fetch's record is written, whether before or after the commit
    assert "slow-rotation" not in fetched[0]
    assert request_state(conn, mac) == "pending"
    assert conn.execute("SELECT count(*) FROM autoprov.previous_password p JOIN subscriber s"
                        " ON s.id = p.subscriber_id WHERE s.username = %s",
                        (sub.username,)).fetchone() == (1,)
