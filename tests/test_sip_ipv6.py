"""SIP over IPv6: a phone registers on a `udp:[::1]:PORT` socket and gets its check-sync there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from autoprov.config import Settings
from tests import sipdigest
from tests.conftest import autoprov_cli, eventually, own_proxy, random_mac
from tests.ports import free_port
from tests.sipp import Phone

SERVER_ID = 21  # a node id of its own (tests/conftest.py own_proxy)


@pytest.fixture
def dual_stack(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, int]]:
    port = free_port()
    with own_proxy(settings, tmp_path, SERVER_ID, f"udp:127.0.0.1:{port}",
                   f"udp:[::1]:{port}") as own:
        yield own, port


def test_phone_on_ipv6_registers_and_gets_its_notify_over_ipv6(
    dual_stack: tuple[Settings, int], conn: psycopg.Connection[Any], new_subscriber: Any,
) -> None:
    own, port = dual_stack
    sub = new_subscriber()
    mac = random_mac()
    autoprov_cli(own, "device", "add", mac, "--vendor", "yealink", "--model", "T46U",
                 "--line", f"1={sub.aor}", check=True)
    phone = Phone(sub.username, sub.domain, sub.password, ("[::1]", port), local_ip="::1")

    with phone.answer("notify-challenge-401") as uas:
        assert phone.register().ok
        phone_side = uas.result()

    assert "AUTH-VERIFIED" in phone_side.output, phone_side.output
    [(contact, sock)] = conn.execute(
        "SELECT contact, socket FROM location WHERE username = %s", (sub.username,)).fetchall()
    assert f"@[::1]:{phone.port}" in contact and sock == f"udp:[::1]:{port}"
    first, _answer = phone_side.received("NOTIFY")
    assert sipdigest.header(first, "Contact") == f"<sip:autoprov@[::1]:{port};transport=udp>"

    def outcome() -> list[tuple[Any, ...]]:
        return conn.execute("SELECT outcome, challenged FROM autoprov.resync_status"
                            " WHERE mac = %s", (mac,)).fetchall()

    assert eventually(lambda: outcome() == [("accepted", True)], timeout=10), outcome()
