"""What a registering client sends is checked, and where it says it is reached not trusted."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from autoprov.config import Settings
from tests.conftest import RunningService
from tests.test_register import _send_raw, bindings
from tests.test_resync import add_device, wait_pending_in_proxy

ELSEWHERE = "127.0.0.7"  # the host a client would like our NOTIFYs aimed at


@pytest.fixture
def elsewhere() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ELSEWHERE, 0))
    sock.settimeout(0.5)
    yield sock
    sock.close()


def test_received_in_the_contact_does_not_redirect_notifies(
    kamailio: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, phone_for: Any, elsewhere: socket.socket,
) -> None:
    sub = new_subscriber()
    add_device(settings, sub)
    phone = phone_for(sub)
    wait_pending_in_proxy(settings, sub.aor)
    target = f"sip:{ELSEWHERE}:{elsewhere.getsockname()[1]}"
    contact = f'<sip:{sub.username}@127.0.0.1:{phone.port};transport=udp>;received="{target}"'

    with phone.answer("notify-accept", timeout=10) as uas:
        assert phone.run("register-contact", contact=contact).ok
        phone_side = uas.result()

    assert phone_side.ok and len(phone_side.received("NOTIFY")) == 1, phone_side.output
    with pytest.raises(TimeoutError):
        data = elsewhere.recv(65535)
        pytest.fail(f"a NOTIFY went where the client said: {data[:80]!r}")
    [(_, received, _)] = bindings(conn, sub.aor)
    assert received is None  # not NATed: reached at its Contact, as it registered


@pytest.mark.parametrize("contact", ["<not a uri>", "<tel:+123456>", "<sip:probe@[::1>",
                                     "sip:", '"unclosed <sip:u@127.0.0.1>'])
def test_contact_that_is_not_a_sip_uri_is_refused_and_not_stored(
    kamailio: RunningService, conn: psycopg.Connection[Any], new_subscriber: Any,
    phone_for: Any, contact: str,
) -> None:
    sub = new_subscriber()
    result = phone_for(sub).run("register-bad-contact", contact=contact)

    assert result.ok, result.output
    assert bindings(conn, sub.aor) == []


def _register(user: str, *headers: str) -> bytes:
    lines = [
        "REGISTER sip:example.test SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5997;branch=z9hG4bKbasic1;rport",
        "Max-Forwards: 70", f"From: <sip:{user}@example.test>;tag=b1",
        f"To: <sip:{user}@example.test>", "Call-ID: basic-1@test", "CSeq: 1 REGISTER",
        f"Contact: <sip:{user}@127.0.0.1:5997>", *headers, "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_basic_authorization_gets_a_digest_challenge(
    kamailio: RunningService, sip_proxy: tuple[str, int], new_subscriber: Any,
    conn: psycopg.Connection[Any],
) -> None:
    sub = new_subscriber()
    basic = base64.b64encode(f"{sub.username}:{sub.password}".encode()).decode()

    answer = _send_raw(sip_proxy, _register(sub.username, f"Authorization: Basic {basic}"))

    assert answer is not None and answer.startswith(b"SIP/2.0 401 "), answer
    assert b'WWW-Authenticate: Digest realm="example.test"' in answer
    assert bindings(conn, sub.aor) == []


def test_replies_do_not_tell_the_kamailio_version(
    kamailio: RunningService, sip_proxy: tuple[str, int], settings: Settings,
) -> None:
    answer = _send_raw(sip_proxy, _register("nobody"))

    assert answer is not None
    server = [line for line in answer.split(b"\r\n") if line.lower().startswith(b"server:")]
    assert server == [f"Server: {settings.sip_server_header}".encode()]
