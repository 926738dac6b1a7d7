"""What a registering client sends is checked, and where it says it is reached not trusted."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from autoprov.config import Settings
from tests.conftest import RunningService
from tests.test_register import bindings
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
