"""Registrations through a database outage, and SQL changes to credentials taking effect at once.

The outage runs on a cluster and a Kamailio of its own, so stopping PostgreSQL does not disturb
the shared ones.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from autoprov import db, stack
from autoprov.config import Settings
from autoprov.pgcluster import Cluster
from tests.conftest import (
    RunningService,
    Subscriber,
    eventually,
    private_database,
    start_kamailio,
)
from tests.sipp import Phone
from tests.test_register import bindings

OUTAGE_S = 70  # longer than a 60 s binding (registrar min_expires), which expires meanwhile


@pytest.fixture
def own_stack() -> Iterator[tuple[Cluster, Settings, RunningService]]:
    with private_database("autoprov-sipdbdown-") as (cluster, settings):
        kam = start_kamailio(settings)
        yield cluster, settings, kam
        stack.stop(kam.service)


def _subscriber(settings: Settings) -> Subscriber:
    sub = Subscriber("u" + secrets.token_hex(5), "example.test", secrets.token_hex(8))
    with psycopg.connect(db.url(settings), autocommit=True) as conn:
        conn.execute("INSERT INTO subscriber (username, domain, password) VALUES (%s, %s, %s)",
                     (sub.username, sub.domain, sub.password))
    return sub


def _phone(settings: Settings, sub: Subscriber) -> Phone:
    _, host, port = settings.sip_listen[0].split(":")
    return Phone(sub.username, sub.domain, sub.password, (host, int(port)))


def test_known_phones_register_through_an_outage_and_location_is_right_afterwards(
    own_stack: tuple[Cluster, Settings, RunningService],
) -> None:
    cluster, settings, kam = own_stack
    known, unknown, leaving = (_subscriber(settings) for _ in range(3))
    phone = _phone(settings, known)
    assert phone.register().ok
    assert _phone(settings, leaving).register(expires=60).ok

    cluster.stop()
    down_at = time.monotonic()
    try:
        # The known phone refreshes (a new Call-ID each time, challenged each time) with 200s,
        # and registers a second contact of its own meanwhile.
        for _ in range(3):
            result = phone.register()
            assert result.ok, result.output
        moved = Phone(known.username, known.domain, known.password, phone.proxy)
        assert moved.register().ok
        # A phone the proxy never verified gets a clear answer, not a challenge loop.
        refused = _phone(settings, unknown).run("register-unavailable")
        assert refused.ok, refused.output
        assert "Retry-After: " in refused.received("SIP/2.0 503")[0]
        kam.wait_for_log("autoprov database unreachable")
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
    finally:
        cluster.start()

    with psycopg.connect(db.url(settings), autocommit=True) as conn:
        def contacts() -> list[str]:
            return sorted(row[0].lower() for row in bindings(conn, known.aor))

        expected = sorted(f"sip:{known.username}@127.0.0.1:{p.port};transport=udp"
                          for p in (phone, moved))
        assert eventually(lambda: contacts() == expected, 15), contacts()
        # The binding that expired while the database was away leaves `location` too.
        assert eventually(lambda: conn.execute(
            "SELECT count(*) FROM location WHERE username = %s", (leaving.username,)
        ).fetchone() == (0,), 15)
        # Written back as usrloc writes them: this node's server id, a socket, future expiry.
        row = conn.execute(
            "SELECT server_id, socket, expires > localtimestamp + interval '200 seconds' "
            "FROM location WHERE username = %s AND contact LIKE %s",
            (known.username, f"%:{moved.port};%")).fetchone()
        assert row == (settings.sip_server_id, settings.sip_listen[0], True)
    kam.wait_for_log("autoprov database reachable again")
    # After the outage the unknown phone registers like any other.
    assert _phone(settings, unknown).register().ok


def test_a_password_changed_or_a_subscriber_deleted_in_sql_stops_working_at_once(
    kamailio: RunningService, conn: psycopg.Connection[Any], new_subscriber: Any,
    phone_for: Any,
) -> None:
    sub = new_subscriber()

    def set_password(password: str) -> None:
        conn.execute("UPDATE subscriber SET password = %s WHERE username = %s",
                     (password, sub.username))

    # A rotation keeps the password the phone held first valid (autoprov.previous_password):
    # so the cached one here is a second password, which a third one replaces.
    set_password("second-password")
    assert phone_for(sub, password="second-password").register().ok  # its HA1 is cached now
    set_password("third-password")
    # The cache entry is dropped on the database's NOTIFY, within a timer tick (20 ms).
    assert eventually(
        lambda: phone_for(sub, password="second-password").run("register-refused").ok, 5)
    assert phone_for(sub, password="third-password").register().ok

    conn.execute("DELETE FROM subscriber WHERE username = %s", (sub.username,))
    assert eventually(
        lambda: phone_for(sub, password="third-password").run("register-refused").ok, 5)


def test_a_refresh_of_a_known_phone_asks_the_database_nothing(
    kamailio: RunningService, conn: psycopg.Connection[Any], new_subscriber: Any,
    phone_for: Any, settings: Settings,
) -> None:
    sub = new_subscriber()
    phone = phone_for(sub)
    assert phone.register(expires=300).ok
    # Both tables locked against everyone: a query in the request path would wait for the lock.
    with psycopg.connect(db.url(settings)) as locker:
        locker.execute("LOCK TABLE subscriber, location IN ACCESS EXCLUSIVE MODE")
        refreshed = phone.register(expires=900)
        locker.rollback()
    assert refreshed.ok, refreshed.output
    # The refreshed expiry reaches `location` within a second or two of the lock's release.
    assert eventually(lambda: conn.execute(
        "SELECT expires > localtimestamp + interval '600 seconds' FROM location "
        "WHERE username = %s", (sub.username,)).fetchall() == [(True,)], 10)


def test_a_phone_that_unregisters_after_refreshes_leaves_location(
    kamailio: RunningService, conn: psycopg.Connection[Any], new_subscriber: Any,
    phone_for: Any,
) -> None:
    sub = new_subscriber()
    phone = phone_for(sub)
    for _ in range(3):  # the first writes its row, the others refresh it in memory
        assert phone.register().ok
    assert len(bindings(conn, sub.aor)) == 1

    assert phone.register(expires=0).ok

    assert eventually(lambda: bindings(conn, sub.aor) == [], 10)
