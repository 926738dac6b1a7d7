"""A phone registers against the real Kamailio + KEMI + Postgres, as a user would see it."""

from __future__ import annotations

import socket
import time
from typing import Any

import psycopg
import pytest

from autoprov import sipprobe
from autoprov.config import Settings
from autoprov.kamailio import rpc as kamailio_rpc
from tests.conftest import RunningService, autoprov_cli, eventually, random_mac


def bindings(conn: psycopg.Connection[Any], aor: str) -> list[tuple[str, str | None, str]]:
    user, domain = aor.split("@")
    return conn.execute(
        "SELECT contact, received, socket FROM location"
        " WHERE username = %s AND domain = %s AND expires > localtimestamp",
        (user, domain),
    ).fetchall()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_phone_registers_and_binding_is_visible_in_sql_and_cli(
    kamailio: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, phone_for: Any, transport: str,
) -> None:
    sub = new_subscriber()
    mac = random_mac()
    autoprov_cli(settings, "device", "add", mac, "--vendor", "yealink", "--model", "T46U",
                 "--line", f"1={sub.aor}", check=True)
    phone = phone_for(sub, transport)

    result = phone.register()

    assert result.ok, result.output
    rows = bindings(conn, sub.aor)
    assert len(rows) == 1
    contact, _received, sock = rows[0]
    assert f"{sub.username}@127.0.0.1:{phone.port}" in contact
    assert sock.startswith(f"{transport}:127.0.0.1:")
    shown = autoprov_cli(settings, "device", "show", mac, check=True).stdout
    assert f"line 1: {sub.aor}  registered" in shown


def test_wrong_password_is_refused_and_logged_without_the_password(
    kamailio: RunningService, conn: psycopg.Connection[Any], new_subscriber: Any,
    phone_for: Any,
) -> None:
    sub = new_subscriber()
    phone = phone_for(sub, password="not-the-password")

    result = phone.run("register-refused")

    assert result.ok, result.output
    assert bindings(conn, sub.aor) == []
    log = kamailio.wait_for_log(f"user={sub.aor}")
    line = next(x for x in log.splitlines() if f"user={sub.aor}" in x)
    assert "autoprov auth failed method=REGISTER" in line
    assert "reason=invalid-password" in line
    assert f"from=127.0.0.1:{result.local_port}/udp" in line
    assert "not-the-password" not in log
    assert sub.password not in log


def test_unknown_user_is_refused(kamailio: RunningService, sip_proxy: tuple[str, int]) -> None:
    from tests.sipp import Phone

    phone = Phone("nobody", "example.test", "whatever", sip_proxy)
    result = phone.run("register-refused")
    assert result.ok, result.output
    assert "reason=unknown-user" in kamailio.wait_for_log("user=nobody@example.test")


def test_deregister_removes_the_binding(
    kamailio: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, phone_for: Any,
) -> None:
    sub = new_subscriber()
    mac = random_mac()
    autoprov_cli(settings, "device", "add", mac, "--vendor", "cisco", "--model", "SPA504G",
                 "--line", f"1={sub.aor}", check=True)
    phone = phone_for(sub)
    assert phone.register().ok
    assert len(bindings(conn, sub.aor)) == 1

    result = phone.register(expires=0)

    assert result.ok, result.output
    assert bindings(conn, sub.aor) == []
    assert "not registered" in autoprov_cli(settings, "device", "show", mac).stdout


def test_binding_gone_from_memory_comes_back_to_sql_on_the_next_register(
    kamailio: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, phone_for: Any,
) -> None:
    """A binding that expired (here: removed from memory, and its row deleted as usrloc's
    db_timer_clean does) and is registered again with the same Contact is a new binding, not a
    refresh: it must be back in `location`."""
    sub = new_subscriber()
    phone = phone_for(sub)
    assert phone.register().ok
    assert phone.register().ok  # a refresh: memory first, `location` within a second
    kamailio_rpc(settings, "ul.rm", "location", sub.aor)
    conn.execute("DELETE FROM location WHERE username = %s", (sub.username,))

    assert phone.register().ok

    assert eventually(lambda: len(bindings(conn, sub.aor)) == 1, timeout=5)


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_options_keepalive_is_answered(kamailio: RunningService,
                                       sip_proxy: tuple[str, int], proto: str) -> None:
    assert sipprobe.options(proto, *sip_proxy) == (200, "Keepalive")


def _send_raw(sip_proxy: tuple[str, int], data: bytes, timeout: float = 2) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(data, sip_proxy)
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def test_invite_without_credentials_is_challenged_and_options_lists_the_methods(
    kamailio: RunningService, sip_proxy: tuple[str, int], new_subscriber: Any
) -> None:
    sub = new_subscriber()
    invite = (
        f"INVITE sip:bob@example.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKinv1;rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:{sub.aor}>;tag=a1\r\n"
        f"To: <sip:bob@example.test>\r\nCall-ID: inv-1@test\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:{sub.username}@127.0.0.1:5999>\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    answer = _send_raw(sip_proxy, invite)
    assert answer is not None
    assert answer.startswith(b"SIP/2.0 407 ")
    assert b'Proxy-Authenticate: Digest realm="example.test"' in answer
    keepalive = sipprobe.options("udp", *sip_proxy)
    assert keepalive == (200, "Keepalive")


def test_broken_sip_message_is_refused_and_the_proxy_keeps_serving(
    kamailio: RunningService, sip_proxy: tuple[str, int]
) -> None:
    _send_raw(sip_proxy, b"REGISTER garbage\r\n\r\n\x00\xff", timeout=0.5)
    too_many_hops = (
        b"OPTIONS sip:example.test SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5998;branch=z9hG4bKmf1;rport\r\n"
        b"Max-Forwards: 0\r\nFrom: <sip:a@example.test>;tag=m1\r\n"
        b"To: <sip:example.test>\r\nCall-ID: mf-1@test\r\nCSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    answer = _send_raw(sip_proxy, too_many_hops)
    assert answer is not None and answer.startswith(b"SIP/2.0 483")
    time.sleep(0.2)
    assert sipprobe.options("udp", *sip_proxy)[0] == 200
