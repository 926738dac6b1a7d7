"""Media through rtpengine (rtpengine_socket): two phones behind different NATs, each writing a
private address in its Contact and SDP, call each other and hear each other, because the proxy
rewrites the SDP of offer and answer to rtpengine, which relays their RTP; the BYE frees the
relay's session. rtpengine and Kamailio are started as `make run` starts them (autoprov.stack)."""

from __future__ import annotations

import contextlib
import secrets
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoprov import rtpengine
from autoprov.config import Settings
from tests import sipdigest
from tests.conftest import own_proxy
from tests.ports import free_port
from tests.sipua import UserAgent, body_of, contact_uri, media_of, route_set, sdp, status_of

SERVER_ID = 26
ALICE_MEDIA = ("10.1.1.1", 4000)  # private addresses: what phones behind NAT write in their SDP
BOB_MEDIA = ("10.2.2.2", 5000)


def _relayed(settings: Settings, tmp_path: Path, server_id: int,
             **overrides: Any) -> contextlib.AbstractContextManager[Settings]:
    return own_proxy(settings, tmp_path, server_id, f"udp:127.0.0.1:{free_port()}",
                     rtpengine_socket=f"udp:127.0.0.1:{free_port()}", **overrides)


@pytest.fixture
def relayed(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    with _relayed(settings, tmp_path, SERVER_ID, rtpengine_port_min=41000,
                  rtpengine_port_max=41999) as own:
        yield own


def _agents(settings: Settings, new_subscriber: Any) -> tuple[UserAgent, UserAgent]:
    _proto, rest = settings.sip_listen[0].split(":", 1)
    host, port = rest.rsplit(":", 1)
    caller, callee = new_subscriber(), new_subscriber()
    alice = UserAgent(caller.username, caller.domain, caller.password, (host, int(port)),
                      contact_host=ALICE_MEDIA[0])
    bob = UserAgent(callee.username, callee.domain, callee.password, (host, int(port)),
                    contact_host=BOB_MEDIA[0])
    return alice, bob


def _call(alice: UserAgent, bob: UserAgent) -> tuple[str, str, str]:
    """bob registers, alice calls him and he answers: (the INVITE bob got, the 200 alice got,
    the Call-ID); alice has ACKed."""
    assert status_of(bob.register()) == 200
    call_id = secrets.token_hex(8)
    uri = f"sip:{bob.user}@{bob.domain}"
    answer = alice.authenticated("INVITE", uri, call_id, f"<{uri}>", body=sdp(*ALICE_MEDIA))
    invite = bob.receive()
    while not invite.startswith("INVITE "):
        invite = bob.receive()
    bob.reply(invite, 200, "OK", to_tag=bob.tag, body=sdp(*BOB_MEDIA))
    while status_of(answer) < 200:
        answer = alice.receive()
    assert status_of(answer) == 200, answer
    to = sipdigest.header(answer, "To") or ""
    routes = [f"Route: {r}" for r in route_set(answer)]
    alice.send(alice.request("ACK", contact_uri(answer), call_id, to, *routes, cseq=alice.cseq))
    return invite, answer, call_id


def _hang_up(alice: UserAgent, bob: UserAgent, answer: str, call_id: str) -> str:
    to = sipdigest.header(answer, "To") or ""
    routes = [f"Route: {r}" for r in route_set(answer)]
    alice.send(alice.request("BYE", contact_uri(answer), call_id, to, *routes))
    bye = bob.receive()
    while not bye.startswith("BYE "):
        bye = bob.receive()
    bob.reply(bye, 200, "OK")
    return alice.receive(skip_provisional=True)


def _rtp(sequence: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, sequence, sequence * 160, 0x1234) + payload


def _exchange(alice_to: tuple[str, int], bob_to: tuple[str, int],
              timeout: float = 8.0) -> tuple[bytes, bytes]:
    """Each phone sends RTP where its SDP told it to, from an address of its own (its NAT's);
    the first payload each of them hears."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        a.setblocking(False)
        b.setblocking(False)
        heard: dict[str, bytes] = {}
        deadline = time.monotonic() + timeout
        sequence = 0
        while len(heard) < 2 and time.monotonic() < deadline:
            sequence += 1
            a.sendto(_rtp(sequence, b"from-alice" * 16), alice_to)
            b.sendto(_rtp(sequence, b"from-bob.." * 16), bob_to)
            time.sleep(0.02)
            for name, sock in (("alice", a), ("bob", b)):
                with contextlib.suppress(BlockingIOError):
                    heard.setdefault(name, sock.recv(2048)[12:])
    return heard.get("alice", b""), heard.get("bob", b"")


def test_two_phones_behind_nat_hear_each_other_through_the_relay(
    relayed: Settings, new_subscriber: Any
) -> None:
    alice, bob = _agents(relayed, new_subscriber)
    try:
        invite, answer, call_id = _call(alice, bob)
        relay = rtpengine.media_address(relayed)
        # Neither phone sees the other's private address: both are told to send to the relay.
        offered, answered = media_of(body_of(invite)), media_of(body_of(answer))
        assert offered[0] == relay and 41000 <= offered[1] <= 41999, invite
        assert answered[0] == relay and 41000 <= answered[1] <= 41999, answer
        assert "10.1.1.1" not in body_of(invite) and "10.2.2.2" not in body_of(answer)
        assert rtpengine.ng(relayed, "query", call_id=call_id)["result"] == b"ok"
        # The callee's Contact is aliased to where its 200 came from: the ACK and BYE reach it.
        assert ";alias=127.0.0.1~" in contact_uri(answer), answer
        heard_by_alice, heard_by_bob = _exchange(answered, offered)
        assert heard_by_alice.startswith(b"from-bob..") and heard_by_bob.startswith(
            b"from-alice"), (heard_by_alice, heard_by_bob)
        assert status_of(_hang_up(alice, bob, answer, call_id)) == 200
    finally:
        alice.close()
        bob.close()
    # The BYE freed the relay's session (and its ports).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            rtpengine.ng(relayed, "query", call_id=call_id)
        except rtpengine.NgError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("rtpengine still holds the call after its BYE")


def test_a_call_without_an_answer_frees_the_relay(relayed: Settings, new_subscriber: Any
                                                  ) -> None:
    alice, bob = _agents(relayed, new_subscriber)
    try:
        assert status_of(bob.register()) == 200
        call_id = secrets.token_hex(8)
        uri = f"sip:{bob.user}@{bob.domain}"
        alice.authenticated("INVITE", uri, call_id, f"<{uri}>", body=sdp(*ALICE_MEDIA))
        invite = bob.receive()
        while not invite.startswith("INVITE "):
            invite = bob.receive()
        assert rtpengine.ng(relayed, "query", call_id=call_id)["result"] == b"ok"
        bob.reply(invite, 486, "Busy Here", to_tag=bob.tag)
        busy = alice.receive(skip_provisional=True)
        assert status_of(busy) == 486, busy
    finally:
        alice.close()
        bob.close()
    with pytest.raises(rtpengine.NgError):
        time.sleep(0.3)
        rtpengine.ng(relayed, "query", call_id=call_id)


def test_calls_go_on_with_direct_media_while_the_relay_is_away(
    settings: Settings, tmp_path: Path, new_subscriber: Any
) -> None:
    # Configured, but not started with the stack: nobody answers on its socket.
    with _relayed(settings, tmp_path, SERVER_ID + 1, rtpengine_run=False) as own:
        alice, bob = _agents(own, new_subscriber)
        try:
            invite, answer, call_id = _call(alice, bob)
            # Unrelayed, not refused: each phone gets the other's own SDP.
            assert media_of(body_of(invite)) == ALICE_MEDIA
            assert media_of(body_of(answer)) == BOB_MEDIA
            assert status_of(_hang_up(alice, bob, answer, call_id)) == 200
        finally:
            alice.close()
            bob.close()
