"""SIP over TLS: a phone registers on a `tls:` socket and its check-sync comes back over the
same TLS connection (a phone behind NAT or a firewall accepts no new connection)."""

from __future__ import annotations

import secrets
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from autoprov import tls
from autoprov.config import Settings
from kemi import digest
from tests import sipdigest
from tests.conftest import autoprov_cli, eventually, own_proxy, random_mac
from tests.ports import free_port

LISTENING_PORT = 5999  # what the phone writes in Via and Contact; its connection's port differs

SERVER_ID = 22  # a node id of its own (tests/conftest.py own_proxy)


@pytest.fixture
def tls_proxy(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, int]]:
    port = free_port()
    with own_proxy(settings, tmp_path, SERVER_ID, f"udp:127.0.0.1:{free_port()}",
                   f"tls:127.0.0.1:{port}") as own:
        yield own, port


class TlsPhone:
    """One SIP line over one TLS connection, as a desk phone keeps it."""

    def __init__(self, settings: Settings, port: int, user: str, domain: str,
                 password: str) -> None:
        context = ssl.create_default_context(cafile=str(tls.dev_ca_path(settings)))
        context.check_hostname = False  # the development certificate names public_host
        self.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), 5))
        self.sock.settimeout(10)
        self.user, self.domain, self.password = user, domain, password
        self.buffer = b""

    def read(self) -> str:
        while b"\r\n\r\n" not in self.buffer:
            data = self.sock.recv(65535)
            if not data:
                raise ConnectionError("the proxy closed the connection")
            self.buffer += data
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head.decode()

    def register(self) -> str:
        callid, tag = secrets.token_hex(8), secrets.token_hex(4)
        authorization = ""
        for cseq in (1, 2):
            aor = f"sip:{self.user}@{self.domain}"
            self.sock.sendall((
                f"REGISTER sip:{self.domain} SIP/2.0\r\n"
                f"Via: SIP/2.0/TLS 127.0.0.1:{LISTENING_PORT};branch=z9hG4bK{secrets.token_hex(6)}"
                ";rport\r\nMax-Forwards: 70\r\n"
                f"From: <{aor}>;tag={tag}\r\nTo: <{aor}>\r\nCall-ID: {callid}\r\n"
                f"CSeq: {cseq} REGISTER\r\n"
                f"Contact: <sip:{self.user}@127.0.0.1:{LISTENING_PORT};transport=tls>\r\n"
                f"Expires: 300\r\n{authorization}Content-Length: 0\r\n\r\n").encode())
            reply = self.read()
            challenge = sipdigest.header(reply, "WWW-Authenticate")
            if not challenge:
                return reply
            value = digest.authorization(challenge, "REGISTER", f"sip:{self.domain}",
                                         self.user, self.password)
            authorization = f"Authorization: {value}\r\n"
        return reply

    def answer(self, request: str, status: str) -> None:
        """Reply to `request`, copying what a reply copies (RFC 3261 8.2.6)."""
        copied = "".join(f"{name}: {sipdigest.header(request, name)}\r\n"
                         for name in ("Via", "From", "Call-ID", "CSeq"))
        to = f"To: {sipdigest.header(request, 'To')};tag={secrets.token_hex(4)}\r\n"
        self.sock.sendall(f"SIP/2.0 {status}\r\n{copied}{to}Content-Length: 0\r\n\r\n".encode())


def test_phone_registered_over_tls_gets_its_notify_on_that_connection(
    tls_proxy: tuple[Settings, int], conn: psycopg.Connection[Any], new_subscriber: Any,
) -> None:
    own, port = tls_proxy
    sub = new_subscriber()
    mac = random_mac()
    autoprov_cli(own, "device", "add", mac, "--vendor", "yealink", "--model", "T46U",
                 "--line", f"1={sub.aor}", check=True)
    phone = TlsPhone(own, port, sub.username, sub.domain, sub.password)

    assert phone.register().startswith("SIP/2.0 200")
    # The device had never resynced: its first REGISTER sends the check-sync, on this connection.
    notify = phone.read()

    assert notify.startswith(f"NOTIFY sip:{sub.username}@127.0.0.1:{LISTENING_PORT};transport=tls")
    assert sipdigest.header(notify, "Event") == "check-sync;reboot=false"
    assert sipdigest.header(notify, "Contact") == \
        f"<sip:autoprov@127.0.0.1:{port};transport=tls>"
    phone.answer(notify, "200 OK")
    [(sock,)] = conn.execute("SELECT socket FROM location WHERE username = %s",
                             (sub.username,)).fetchall()
    assert sock == f"tls:127.0.0.1:{port}"

    def outcome() -> list[tuple[Any, ...]]:
        return conn.execute("SELECT outcome FROM autoprov.resync_status WHERE mac = %s",
                            (mac,)).fetchall()

    assert eventually(lambda: outcome() == [("accepted",)], timeout=10), outcome()
