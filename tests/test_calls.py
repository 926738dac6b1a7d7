"""Calls through the proxy between real sipp phones: authentication, parallel forking, refusals
passed back, the upstream and trusted sources."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoprov.config import Settings
from tests.conftest import RunningService, Subscriber, own_proxy
from tests.ports import free_port
from tests.sipp import Phone


def _call(caller: Phone, callee: str, domain: str = "example.test", **keys: str) -> str:
    result = caller.run("call-uac", callee=callee, callee_domain=domain, **keys)
    assert result.ok, result.output
    return result.output + result.messages


def test_a_subscriber_calls_another(kamailio: RunningService, new_subscriber: Any,
                                    phone_for: Any) -> None:
    alice, bob = new_subscriber(), new_subscriber()
    bob_phone = phone_for(bob)
    assert bob_phone.register().ok
    with bob_phone.answer("call-uas") as uas:
        trace = _call(phone_for(alice), bob.username)
        callee_side = uas.result()
    assert "CALL-ANSWERED" in trace and "CALL-ENDED" in trace
    assert callee_side.ok and "CALL-TAKEN" in callee_side.output, callee_side.output
    [invite] = callee_side.received("INVITE")
    assert "Record-Route: <sip:127.0.0.1" in invite  # BYE and ACK come through the proxy
    assert "Proxy-Authorization" not in invite  # credentials stay with the proxy


def test_a_re_invite_and_the_bye_follow_the_record_route(
    kamailio: RunningService, new_subscriber: Any, phone_for: Any
) -> None:
    alice, bob = new_subscriber(), new_subscriber()
    bob_phone = phone_for(bob)
    assert bob_phone.register().ok
    with bob_phone.answer("call-uas-reinvite") as uas:
        result = phone_for(alice).run("call-uac-reinvite", callee=bob.username,
                                      callee_domain="example.test")
        callee_side = uas.result()
    assert result.ok and "REINVITE-ANSWERED" in result.output, result.output
    assert "CALL-TAKEN" in callee_side.output, callee_side.output
    _invite, reinvite = callee_side.received("INVITE")
    [bye] = callee_side.received("BYE")
    for request in (reinvite, bye):  # the proxy stayed in the path and removed its own Route
        assert "Route:" not in request.replace("Record-Route:", "")
        assert "Via: SIP/2.0/UDP 127.0.0.1:" in request


def test_a_phone_behind_nat_is_reached_where_it_registered_from(
    kamailio: RunningService, conn: Any, new_subscriber: Any, phone_for: Any
) -> None:
    alice, bob = new_subscriber(), new_subscriber()
    bob_phone = phone_for(bob)
    # Behind NAT: it writes its private address in the Contact, and its packets come from
    # the address and port its NAT gives them (here: the port its UAS side listens on).
    assert bob_phone.run("register", local_port=bob_phone.port, contact_host="10.0.0.5",
                         contact_port=5060).ok
    [(contact, received)] = conn.execute(
        "SELECT contact, received FROM location WHERE username = %s",
        (bob.username,)).fetchall()
    assert "@10.0.0.5:5060" in contact and received == f"sip:127.0.0.1:{bob_phone.port}"
    with bob_phone.answer("call-uas") as uas:
        trace = _call(phone_for(alice), bob.username)
        callee_side = uas.result()
    assert "CALL-ANSWERED" in trace and "CALL-TAKEN" in callee_side.output
    [invite] = callee_side.received("INVITE")
    assert invite.startswith(f"INVITE sip:{bob.username}@10.0.0.5:5060")


def test_a_registered_caller_calls_on_its_cached_credentials_and_a_new_password_counts(
    kamailio: RunningService, conn: Any, new_subscriber: Any, phone_for: Any
) -> None:
    alice, bob = new_subscriber(), new_subscriber()
    alice_phone, bob_phone = phone_for(alice), phone_for(bob)
    assert alice_phone.register().ok and bob_phone.register().ok  # both verified, cached
    with bob_phone.answer("call-uas") as uas:
        assert "CALL-ANSWERED" in _call(alice_phone, bob.username)
        assert "CALL-TAKEN" in uas.result().output
    # SQL changes alice's password: the cached HA1 is dropped, the old password refused.
    conn.execute("UPDATE subscriber SET password = 'changed-by-sql' WHERE username = %s",
                 (alice.username,))
    # (From an address of its own: refusals count towards a ban of their source address.)
    elsewhere = dataclasses.replace(alice_phone, local_ip="127.0.0.9")
    refused = elsewhere.run("call-uac", callee=bob.username, callee_domain="example.test")
    assert "SIP/2.0 403 " in refused.messages, refused.output


def test_a_call_forks_to_every_contact_and_the_first_answer_wins(
    kamailio: RunningService, new_subscriber: Any, phone_for: Any
) -> None:
    alice, bob = new_subscriber(), new_subscriber()
    desk, mobile = phone_for(bob), phone_for(bob)
    assert desk.register().ok and mobile.register().ok
    with desk.answer("call-uas") as answering, mobile.answer("call-uas-ringing") as ringing:
        trace = _call(phone_for(alice), bob.username)
        answered, canceled = answering.result(), ringing.result()
    assert "CALL-ANSWERED" in trace
    assert "CALL-TAKEN" in answered.output, trace[-6000:]
    assert "CALL-CANCELED" in canceled.output, canceled.output
    assert "Unhandled exception" not in kamailio.log()  # every route ran to its end


def test_the_caller_hangs_up_while_it_rings(kamailio: RunningService, new_subscriber: Any,
                                           phone_for: Any) -> None:
    alice, bob = new_subscriber(), new_subscriber()
    bob_phone = phone_for(bob)
    assert bob_phone.register().ok
    with bob_phone.answer("call-uas-ringing") as uas:
        result = phone_for(alice).run("call-uac-cancel", callee=bob.username,
                                      callee_domain="example.test")
        callee_side = uas.result()
    assert result.ok and "CALL-CANCELED" in result.output, result.output
    assert "CALL-CANCELED" in callee_side.output, callee_side.output


@pytest.mark.parametrize("case", ["no-such-user", "not-registered", "busy"])
def test_refusals_reach_the_caller(kamailio: RunningService, new_subscriber: Any,
                                   phone_for: Any, case: str) -> None:
    alice, bob = new_subscriber(), new_subscriber()
    expected = {"no-such-user": "404", "not-registered": "480", "busy": "486"}[case]
    if case == "busy":
        bob_phone = phone_for(bob)
        assert bob_phone.register().ok
        with bob_phone.answer("call-uas-busy") as uas:
            trace = _call(phone_for(alice), bob.username)
            assert "CALL-BUSY" in uas.result().output
    else:
        callee = "nobody-here" if case == "no-such-user" else bob.username
        trace = _call(phone_for(alice), callee)
    assert "FINAL-REFUSED" in trace
    assert f"SIP/2.0 {expected} " in trace, trace[-2000:]


def test_a_caller_using_another_users_from_is_refused_and_logged(
    kamailio: RunningService, new_subscriber: Any, phone_for: Any
) -> None:
    alice, bob, carol = new_subscriber(), new_subscriber(), new_subscriber()
    # (From an address of its own: refusals count towards a ban of their source address.)
    spoofer = dataclasses.replace(phone_for(alice), local_ip="127.0.0.8")
    result = spoofer.run("call-uac", callee=carol.username, callee_domain="example.test",
                         user=bob.username)
    assert "SIP/2.0 403 " in result.messages, result.output
    log = kamailio.wait_for_log(f"user={alice.aor}")
    assert "reason=user-mismatch" in log and "method=INVITE" in log

SERVER_ID = 24  # a node id of its own (tests/conftest.py own_proxy)


@pytest.fixture
def with_upstream(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, Phone]]:
    """A proxy whose upstream PBX is a sipp on 127.0.0.2, and which trusts 127.0.0.3."""
    up_port, port = free_port(), free_port()
    pbx = Phone("pbx", "pbx.example.com", "-", ("127.0.0.1", port), port=up_port,
                local_ip="127.0.0.2")
    with own_proxy(settings, tmp_path, SERVER_ID, f"udp:127.0.0.1:{port}",
                   sip_upstream=f"sip:127.0.0.2:{up_port};transport=udp",
                   sip_trusted_sources=("127.0.0.3/32",)) as own:
        yield own, pbx


def _proxy_of(own: Settings) -> tuple[str, int]:
    _, host, port = own.sip_listen[0].split(":")
    return host, int(port)


def test_numbers_and_other_domains_go_to_the_upstream(
    with_upstream: tuple[Settings, Phone], new_subscriber: Any
) -> None:
    own, pbx = with_upstream
    alice = new_subscriber()
    caller = Phone(alice.username, alice.domain, alice.password, _proxy_of(own))
    for callee, domain in (("+493012345", "example.test"), ("someone", "elsewhere.example")):
        with pbx.answer("call-uas") as uas:
            trace = _call(caller, callee, domain)
            upstream = uas.result()
        assert "CALL-ANSWERED" in trace and "CALL-TAKEN" in upstream.output, upstream.output
    # A name that is no subscriber of ours is not a number: nobody gets it.
    assert "SIP/2.0 404 " in _call(caller, "nobody-here")


@pytest.mark.parametrize("source", ["127.0.0.2", "127.0.0.3"], ids=["upstream", "trusted"])
def test_the_upstream_and_a_trusted_source_reach_a_subscriber_without_digest(
    with_upstream: tuple[Settings, Phone], new_subscriber: Any, source: str
) -> None:
    own, _pbx = with_upstream
    bob: Subscriber = new_subscriber()
    bob_phone = Phone(bob.username, bob.domain, bob.password, _proxy_of(own))
    assert bob_phone.register().ok
    gateway = Phone("gw", "gw.example.com", "-", _proxy_of(own), local_ip=source)
    with bob_phone.answer("call-uas") as uas:
        result = gateway.run("call-uac-trusted", callee=bob.username,
                             callee_domain="example.test")
        callee_side = uas.result()
    assert result.ok and "CALL-ANSWERED" in result.output, result.output
    assert "CALL-TAKEN" in callee_side.output
