"""Resync across proxy restarts, several proxies on one database, a database restart, and
phones that never answer."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from autoprov import db, stack
from autoprov.config import Settings
from autoprov.pgcluster import Cluster
from tests import sipdigest
from tests.conftest import (
    RunningService,
    Subscriber,
    autoprov_cli,
    make_settings,
    start_kamailio,
    world_readable_tmpdir,
)
from tests.ports import free_port
from tests.sipp import Phone
from tests.test_resync import add_device, outcome_when, wait_pending_in_proxy


def proxy_of(settings: Settings) -> tuple[str, int]:
    _, host, port = settings.sip_listen[0].split(":")
    return host, int(port)


def line_phone(sub: Subscriber, settings: Settings) -> Phone:
    return Phone(sub.username, sub.domain, sub.password, proxy_of(settings))


@pytest.fixture
def second_node(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Another proxy on the same database, with its own server_id and ports."""
    own = make_settings(tmp_path / "node2", db_url=settings.db_url, sip_server_id=2)
    node = start_kamailio(own)
    yield own
    stack.stop(node.service)


def test_each_binding_is_notified_once_by_the_proxy_it_registered_through(
    kamailio: RunningService, settings: Settings, second_node: Settings,
    new_subscriber: Any, conn: psycopg.Connection[Any],
) -> None:
    one, two = new_subscriber(), new_subscriber()
    via_node1, via_node2 = line_phone(one, settings), line_phone(two, second_node)
    assert via_node1.register().ok and via_node2.register().ok
    mac = "0015" + one.username[1:9]
    with via_node1.answer("notify-challenge-401") as uas1, \
            via_node2.answer("notify-challenge-401") as uas2:
        autoprov_cli(settings, "device", "add", mac, "--vendor", "yealink", "--model", "T46U",
                     "--line", f"1={one.aor}", "--line", f"2={two.aor}", check=True)
        results = uas1.result(), uas2.result()
    for node, result in zip((settings, second_node), results, strict=True):
        assert "AUTH-VERIFIED" in result.output
        first = result.received("NOTIFY")[0]
        assert f"127.0.0.1:{proxy_of(node)[1]}" in (sipdigest.header(first, "Via") or "")
    rows = conn.execute(
        "SELECT n.server_id, count(*) FROM autoprov.resync_notify n"
        " JOIN autoprov.resync_request r ON r.id = n.request_id"
        " JOIN autoprov.device d ON d.id = r.device_id WHERE d.mac = %s"
        " GROUP BY n.server_id ORDER BY 1", (mac,)).fetchall()
    assert rows == [(1, 1), (2, 1)]


def test_pending_request_survives_a_proxy_restart(
    settings: Settings, tmp_path: Path, new_subscriber: Any
) -> None:
    own = make_settings(tmp_path / "node3", db_url=settings.db_url, sip_server_id=3)
    node = start_kamailio(own)
    try:
        sub = new_subscriber()
        add_device(settings, sub)  # no contact yet: pending
        wait_pending_in_proxy(own, sub.aor)
    finally:
        stack.stop(node.service)
    node = start_kamailio(own)
    try:
        wait_pending_in_proxy(own, sub.aor)
        phone = line_phone(sub, own)
        with phone.answer("notify-challenge-401") as uas:
            assert phone.register().ok
            assert "AUTH-VERIFIED" in uas.result().output
    finally:
        stack.stop(node.service)


def test_phone_that_never_answers_is_not_retried_forever(
    kamailio: RunningService, settings: Settings, new_subscriber: Any,
    conn: psycopg.Connection[Any],
) -> None:
    sub = new_subscriber()
    mac = add_device(settings, sub)
    phone = line_phone(sub, settings)
    states = []
    for attempt in (1, 2, 3):
        wait_pending_in_proxy(settings, sub.aor)
        assert phone.register().ok  # nobody answers on the contact
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and conn.execute(
                "SELECT count(*) FROM autoprov.resync_status WHERE mac = %s"
                " AND outcome = 'no_answer'", (mac,)).fetchone() != (attempt,):
            time.sleep(0.2)
        (state,) = conn.execute(
            "SELECT r.state FROM autoprov.resync_request r JOIN autoprov.device d"
            " ON d.id = r.device_id WHERE d.mac = %s ORDER BY r.id DESC LIMIT 1",
            (mac,)).fetchone() or ("",)
        states.append(state)
    assert states == ["pending", "pending", "failed"]
    sent = conn.execute("SELECT count(*) FROM autoprov.resync_status WHERE mac = %s",
                        (mac,)).fetchone()
    assert phone.register().ok
    time.sleep(0.5)
    assert conn.execute("SELECT count(*) FROM autoprov.resync_status WHERE mac = %s",
                        (mac,)).fetchone() == sent


def test_database_restart_loses_nothing(tmp_path: Path) -> None:
    base = world_readable_tmpdir("autoprov-pgr-")
    cluster = Cluster(base / "pg", free_port(), durable=False)
    cluster.init()
    cluster.start()
    own = make_settings(tmp_path / "var", db_url=cluster.url())
    db.migrate(own)
    node = start_kamailio(own)
    try:
        sub = Subscriber("restart", "example.test", "pw-restart")
        with db.connect(own, autocommit=True) as c:
            c.execute("INSERT INTO subscriber (username, domain, password) VALUES (%s, %s, %s)",
                      (sub.username, sub.domain, sub.password))
        mac = add_device(own, sub)
        phone = line_phone(sub, own)
        wait_pending_in_proxy(own, sub.aor)

        cluster.stop()
        time.sleep(1)  # the proxy's timer keeps ticking against a database that is away
        cluster.start()

        with phone.answer("notify-challenge-401") as uas:
            assert phone.register().ok
            assert "AUTH-VERIFIED" in uas.result().output
        shown = autoprov_cli(own, "device", "show", mac)
        assert "registered" in shown.stdout
        log = node.log()
        assert "Unhandled exception" not in log
        assert log.count("autoprov resync database unavailable") <= 2
    finally:
        stack.stop(node.service)
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_a_notify_kamailio_cannot_send_is_no_answer_not_a_retry_loop(
    kamailio: RunningService, settings: Settings, new_subscriber: Any,
    conn: psycopg.Connection[Any],
) -> None:
    """A binding on a socket this proxy no longer listens on (its sip_listen changed since the
    phone registered): Kamailio refuses the NOTIFY every time. After a few tries it is recorded
    as no answer (the phone is tried again after its next REGISTER) instead of being queued
    again every 20 ms until the binding expires; and the phones after it still get theirs."""
    stuck, fine = new_subscriber(), new_subscriber()
    assert line_phone(stuck, settings).register().ok
    fine_phone = line_phone(fine, settings)
    assert fine_phone.register().ok
    conn.execute("UPDATE location SET socket = 'udp:127.0.0.1:9' WHERE username = %s",
                 (stuck.username,))
    stuck_mac = add_device(settings, stuck)
    with fine_phone.answer("notify-challenge-401") as uas:
        add_device(settings, fine)
        assert "AUTH-VERIFIED" in uas.result().output
    assert outcome_when(conn, stuck_mac, 10, ("no_answer", False)) == ("no_answer", False)
    assert conn.execute("SELECT request_state FROM autoprov.resync_status WHERE mac = %s",
                        (stuck_mac,)).fetchone() == ("pending",)
    tries = conn.execute(
        "SELECT count(*) FROM autoprov.resync_notify n JOIN autoprov.resync_request r"
        " ON r.id = n.request_id JOIN autoprov.device d ON d.id = r.device_id"
        " WHERE d.mac = %s", (stuck_mac,)).fetchone()
    assert tries == (1,)  # one NOTIFY row, tried a few times, not a row per try
