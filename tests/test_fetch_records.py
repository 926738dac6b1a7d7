"""Fetch records: the service writes them in batches (provisioning_wsgi/cache.py FetchWriter, one
COPY a batch; a GET repeated on the plain port within seconds is recorded once), and a batch of
TLS fetches settles what they delivered in one go (sql/008): the pending resync requests whose
change the phones now have, and the old passwords no phone needs.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from autoprov.config import Settings
from provisioning_wsgi import cache, store
from tests.provisioning_helpers import add_device


def _id_and_snapshot(conn: psycopg.Connection[Any], mac: str) -> tuple[int, str]:
    """The device's id, and a snapshot taken now: what a fetch read now would record."""
    row = conn.execute("SELECT id, pg_current_snapshot()::text FROM autoprov.device"
                       " WHERE mac = %s", (mac,)).fetchone()
    assert row is not None
    return row[0], row[1]


def _fetched(writer: cache.FetchWriter, conn: psycopg.Connection[Any], port: str,
             *macs: str) -> None:
    """Each phone fetches its file on `port`; the fetches are queued, as the service does."""
    for mac in macs:
        device_id, snapshot = _id_and_snapshot(conn, mac)
        writer.record(device_id, port, f"{mac}.cfg", "v1", "192.0.2.7", "Yealink SIP-T46U",
                      snapshot)


def _state(conn: psycopg.Connection[Any], rid: int) -> str:
    row = conn.execute("SELECT state FROM autoprov.resync_request WHERE id = %s",
                       (rid,)).fetchone()
    return str(row[0]) if row else ""


def _old_passwords(conn: psycopg.Connection[Any], username: str) -> int:
    row = conn.execute("SELECT count(*) FROM autoprov.previous_password p JOIN subscriber s"
                       " ON s.id = p.subscriber_id WHERE s.username = %s", (username,)).fetchone()
    return int(row[0]) if row else -1


def test_a_batch_is_recorded_exactly_and_in_order(
    settings: Settings, conn: psycopg.Connection[Any], new_subscriber: Any,
) -> None:
    first = add_device(conn, "yealink", [new_subscriber()])
    second = add_device(conn, "yealink", [new_subscriber()])
    (first_id, snapshot), (second_id, _) = (_id_and_snapshot(conn, m) for m in (first, second))
    writer = cache.FetchWriter(store.Store(settings))
    before = time.time()
    # What a client sends is stored as sent: a tab, newline or backslash cannot break the row.
    writer.record(first_id, "tls", f"{first}.cfg", "v1", "192.0.2.7",
                  "Yealink\tSIP-T46U\n108.86\\0.20\x00", snapshot)
    writer.record(second_id, "bootstrap", f"{second}.cfg", "v2", "not an address", None,
                  snapshot)
    writer.record(first_id, "bootstrap", f"{first}.cfg", "v3", "2001:db8::7", "", snapshot)
    after = time.time()

    assert writer.write_pending()

    rows = conn.execute(
        "SELECT d.mac, f.port, f.config_version, host(f.client_addr), f.user_agent,"
        "       f.read_snapshot::text, extract(epoch FROM f.fetched_at)"
        "  FROM autoprov.config_fetch f JOIN autoprov.device d ON d.id = f.device_id"
        " WHERE d.mac IN (%s, %s) ORDER BY f.id", (first, second)).fetchall()
    assert [row[:6] for row in rows] == [
        (first, "tls", "v1", "192.0.2.7", "Yealink\tSIP-T46U\n108.86\\0.20", snapshot),
        (second, "bootstrap", "v2", None, None, snapshot),
        (first, "bootstrap", "v3", "2001:db8::7", None, snapshot),
    ]
    times = [float(row[6]) for row in rows]
    assert before - 0.001 <= times[0] <= times[1] <= times[2] <= after + 0.001


def test_on_the_plain_port_a_repeat_within_the_window_is_not_recorded_again(
    settings: Settings, conn: psycopg.Connection[Any], new_subscriber: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cache, "REPEAT_WINDOW_S", 0.5)
    mac = add_device(conn, "yealink", [new_subscriber()])
    device_id, snapshot = _id_and_snapshot(conn, mac)
    writer = cache.FetchWriter(store.Store(settings))

    def fetch(port: str, file: str, version: str) -> None:
        writer.record(device_id, port, file, version, "192.0.2.7", None, snapshot)

    for _ in range(3):
        fetch("bootstrap", f"{mac}.cfg", "v1")
    fetch("bootstrap", "another.cfg", "v1")
    fetch("bootstrap", f"{mac}.cfg", "v2")  # the file changed: its new version is news
    for _ in range(2):
        fetch("tls", f"{mac}.cfg", "v1")  # every TLS fetch: each may settle a resync
    assert writer.write_pending()
    time.sleep(0.6)
    fetch("bootstrap", f"{mac}.cfg", "v1")  # the window has passed
    assert writer.write_pending()

    assert conn.execute(
        "SELECT f.port, f.file, f.config_version FROM autoprov.config_fetch f"
        " WHERE f.device_id = %s ORDER BY f.id", (device_id,)).fetchall() == [
        ("bootstrap", f"{mac}.cfg", "v1"),
        ("bootstrap", "another.cfg", "v1"),
        ("bootstrap", f"{mac}.cfg", "v2"),
        ("tls", f"{mac}.cfg", "v1"),
        ("tls", f"{mac}.cfg", "v1"),
        ("bootstrap", f"{mac}.cfg", "v1"),
    ]


def test_the_fetches_of_a_device_removed_meanwhile_go_and_the_rest_are_recorded(
    settings: Settings, conn: psycopg.Connection[Any], new_subscriber: Any,
) -> None:
    kept, removed, also_kept = (add_device(conn, "yealink", [new_subscriber()])
                                for _ in range(3))
    writer = cache.FetchWriter(store.Store(settings))
    _fetched(writer, conn, "bootstrap", kept, removed, also_kept, removed)
    conn.execute("DELETE FROM autoprov.device WHERE mac = %s", (removed,))

    assert writer.write_pending()

    assert conn.execute(
        "SELECT d.mac FROM autoprov.config_fetch f JOIN autoprov.device d ON d.id = f.device_id"
        " WHERE d.mac IN (%s, %s, %s) ORDER BY f.id", (kept, removed, also_kept)).fetchall() \
        == [(kept,), (also_kept,)]
    assert conn.execute("SELECT count(*) FROM autoprov.config_fetch f WHERE NOT EXISTS"
                        " (SELECT 1 FROM autoprov.device d WHERE d.id = f.device_id)"
                        ).fetchone() == (0,)


def test_one_batch_of_tls_fetches_settles_every_request_it_delivered(
    settings: Settings, conn: psycopg.Connection[Any], new_subscriber: Any,
) -> None:
    over_tls = [add_device(conn, "yealink", [new_subscriber()]) for _ in range(3)]
    bootstrap_only = add_device(conn, "yealink", [new_subscriber()])
    asked_later = add_device(conn, "yealink", [new_subscriber()])
    macs = [*over_tls, bootstrap_only, asked_later]
    rids = {mac: conn.execute("SELECT autoprov.request_resync(%s)", (mac,)).fetchone()[0]
            for mac in macs[:-1]}
    writer = cache.FetchWriter(store.Store(settings))
    _fetched(writer, conn, "tls", *over_tls, asked_later)
    _fetched(writer, conn, "bootstrap", bootstrap_only)
    # Asked for after its config was read: the fetch did not deliver this change.
    rids[asked_later] = conn.execute("SELECT autoprov.request_resync(%s)",
                                     (asked_later,)).fetchone()[0]

    assert writer.write_pending()

    assert {mac: _state(conn, rid) for mac, rid in rids.items()} == {
        **{mac: "fetched" for mac in over_tls},
        bootstrap_only: "pending",  # the plain port carries no line: nothing is delivered
        asked_later: "pending",
    }


def test_an_old_password_goes_once_every_phone_with_the_line_fetched_the_new_one(
    settings: Settings, conn: psycopg.Connection[Any], new_subscriber: Any,
) -> None:
    sub = new_subscriber()
    desk, lobby = add_device(conn, "yealink", [sub]), add_device(conn, "yealink", [sub])
    writer = cache.FetchWriter(store.Store(settings))

    conn.execute("UPDATE subscriber SET password = 'rotated-1' WHERE username = %s",
                 (sub.username,))
    _fetched(writer, conn, "tls", desk)
    assert writer.write_pending()
    assert _old_passwords(conn, sub.username) == 1  # the lobby phone still has only the old one
    _fetched(writer, conn, "tls", lobby)
    assert writer.write_pending()
    assert _old_passwords(conn, sub.username) == 0

    conn.execute("UPDATE subscriber SET password = 'rotated-2' WHERE username = %s",
                 (sub.username,))
    _fetched(writer, conn, "tls", desk, lobby)  # both in one batch
    assert writer.write_pending()
    assert _old_passwords(conn, sub.username) == 0
