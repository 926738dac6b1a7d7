"""check-sync NOTIFY from the proxy to real sipp phones, every trigger, every outcome."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from autoprov import db
from autoprov import kamailio as kam
from autoprov.config import Settings
from tests import sipdigest
from tests.conftest import (
    OVERRIDDEN_MODEL,
    RunningService,
    Subscriber,
    autoprov_cli,
    random_mac,
)
from tests.sipp import Phone, SippResult
from tests.sipua import UserAgent, status_of


@dataclass
class Device:
    mac: str
    sub: Subscriber
    phone: Phone


def wait_pending_in_proxy(settings: Settings, aor: str, timeout: float = 5) -> None:
    """Wait until the proxy holds `aor` as pending in memory (its REGISTER will trigger)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kam.rpc(settings, "htable.get", "resync_pending", aor)
            return
        except kam.RpcError:
            time.sleep(0.05)
    raise AssertionError(f"{aor} never became pending in the proxy")


def add_device(settings: Settings, sub: Subscriber, vendor: str = "yealink",
               model: str = "T46U") -> str:
    mac = random_mac()
    autoprov_cli(settings, "device", "add", mac, "--vendor", vendor, "--model", model,
                 "--line", f"1={sub.aor}", check=True)
    return mac


@pytest.fixture
def registered_device(kamailio: RunningService, settings: Settings, new_subscriber: Any,
                      phone_for: Any) -> Callable[..., Device]:
    """A device whose phone registered and accepted the NOTIFY its first REGISTER triggered."""

    def make(vendor: str = "yealink", model: str = "T46U", transport: str = "udp") -> Device:
        sub = new_subscriber()
        mac = add_device(settings, sub, vendor, model)
        phone = phone_for(sub, transport)
        wait_pending_in_proxy(settings, sub.aor)
        with phone.answer("notify-accept") as uas:
            assert phone.register().ok
            assert uas.result().ok
        return Device(mac, sub, phone)

    return make


def resync_cli(settings: Settings, mac: str, wait: float = 15) -> tuple[int, dict[str, Any]]:
    result = autoprov_cli(settings, "resync", mac, "--wait", str(wait), "--json")
    assert result.stderr == ""
    return result.returncode, json.loads(result.stdout)


def check_notify_on_the_wire(message: str, sub: Subscriber, event: str,
                             state: str = "active") -> None:
    assert sipdigest.header(message, "Event") == event
    assert sipdigest.header(message, "Subscription-State") == state
    from_, to = sipdigest.header(message, "From"), sipdigest.header(message, "To")
    assert from_ is not None and from_.startswith(f"<sip:{sub.aor}>;tag=")
    assert to == f"<sip:{sub.aor}>"  # no To tag: it starts no dialog of ours
    assert sipdigest.header(message, "Max-Forwards") == "70"
    contact = sipdigest.header(message, "Contact")
    assert contact is not None and contact.startswith("<sip:autoprov@127.0.0.1:"), contact
    assert contact.endswith(";transport=udp>") or contact.endswith(";transport=tcp>"), contact


def check_answer_in_dialog(first: str, answer: str) -> None:
    """RFC 3261 8.1.3.5 / 22.2: the answer to a challenge keeps Call-ID, From (tag) and To, and
    raises the CSeq."""
    for name in ("Call-ID", "From", "To"):
        assert sipdigest.header(answer, name) == sipdigest.header(first, name), name
    first_cseq = str(sipdigest.header(first, "CSeq")).split()
    answer_cseq = str(sipdigest.header(answer, "CSeq")).split()
    assert answer_cseq == [str(int(first_cseq[0]) + 1), "NOTIFY"], (first_cseq, answer_cseq)


def test_phone_challenging_with_401_gets_the_line_credentials(
    registered_device: Callable[..., Device], settings: Settings
) -> None:
    dev = registered_device()
    with dev.phone.answer("notify-challenge-401") as uas:
        code, info = resync_cli(settings, dev.mac)
        phone_side = uas.result()

    assert phone_side.ok and "AUTH-VERIFIED" in phone_side.output, phone_side.output
    first, retry = phone_side.received("NOTIFY")
    check_notify_on_the_wire(first, dev.sub, "check-sync;reboot=false")
    check_notify_on_the_wire(retry, dev.sub, "check-sync;reboot=false")
    check_answer_in_dialog(first, retry)
    assert sipdigest.header(first, "Authorization") is None
    auth = sipdigest.header(retry, "Authorization")
    assert auth and sipdigest.valid(auth, "NOTIFY", dev.sub.username, dev.sub.password)
    assert code == 0
    [contact] = info["contacts"]
    assert (contact["outcome"], contact["code"], contact["challenged"]) == ("accepted", 200, True)
    assert info["state"] == "done"


def test_phone_challenging_with_407_gets_proxy_authorization(
    registered_device: Callable[..., Device], settings: Settings
) -> None:
    dev = registered_device(vendor="cisco", model="SPA504G")
    with dev.phone.answer("notify-challenge-407") as uas:
        code, info = resync_cli(settings, dev.mac)
        phone_side = uas.result()

    assert phone_side.ok and "ANSWER-IN-DIALOG" in phone_side.output, phone_side.output
    first, retry = phone_side.received("NOTIFY")
    check_notify_on_the_wire(first, dev.sub, "check-sync")
    check_answer_in_dialog(first, retry)
    auth = sipdigest.header(retry, "Proxy-Authorization")
    assert auth and sipdigest.valid(auth, "NOTIFY", dev.sub.username, dev.sub.password)
    assert code == 0 and info["contacts"][0]["outcome"] == "accepted"


@pytest.mark.parametrize("challenge", [
    'Digest realm="phone", nonce="abc123", algorithm=SHA-256, qop="auth"',
    'Digest realm="phone", nonce="abc123", algorithm=MD5, qop="auth,auth-int", opaque="op4q"',
    'Digest realm="phone", nonce="abc123"',  # RFC 2069 style: no qop, no algorithm
])
def test_challenge_variants_are_answered_in_one_round(
    registered_device: Callable[..., Device], settings: Settings, challenge: str
) -> None:
    dev = registered_device()
    with dev.phone.answer("notify-challenge", challenge=challenge) as uas:
        code, info = resync_cli(settings, dev.mac)
        phone_side = uas.result()

    assert phone_side.ok and "ANSWER-IN-DIALOG" in phone_side.output, phone_side.output
    first, retry = phone_side.received("NOTIFY")
    check_answer_in_dialog(first, retry)
    auth = str(sipdigest.header(retry, "Authorization"))
    wanted = sipdigest.params(challenge)
    got = sipdigest.params(auth)
    assert sipdigest.valid(auth, "NOTIFY", dev.sub.username, dev.sub.password), auth
    assert got.get("algorithm", "MD5") == wanted.get("algorithm", "MD5")
    assert got.get("opaque") == wanted.get("opaque")
    assert got.get("qop") == ("auth" if "qop" in wanted else None)
    assert code == 0
    assert (info["contacts"][0]["outcome"], info["contacts"][0]["challenged"]) == \
        ("accepted", True)


def test_stale_nonce_is_answered_once_more_with_the_new_nonce(
    registered_device: Callable[..., Device], settings: Settings
) -> None:
    dev = registered_device()
    with dev.phone.answer("notify-challenge-stale") as uas:
        code, info = resync_cli(settings, dev.mac)
        phone_side = uas.result()

    assert phone_side.ok, phone_side.output
    first, answer, again = phone_side.received("NOTIFY")
    check_answer_in_dialog(first, answer)
    check_answer_in_dialog(answer, again)
    auth = str(sipdigest.header(again, "Authorization"))
    assert sipdigest.params(auth)["nonce"].startswith("n2")
    assert sipdigest.valid(auth, "NOTIFY", dev.sub.username, dev.sub.password)
    assert code == 0 and info["contacts"][0]["outcome"] == "accepted"


def test_answer_to_a_challenge_that_gets_no_reply_is_no_answer(
    registered_device: Callable[..., Device], settings: Settings
) -> None:
    dev = registered_device()
    with dev.phone.answer("notify-challenge-silent", timeout=30) as uas:
        code, info = resync_cli(settings, dev.mac, wait=20)
        uas.result()
    assert code == 1
    [contact] = info["contacts"]
    assert (contact["outcome"], contact["challenged"]) == ("no_answer", True)


def outcome_when(conn: psycopg.Connection[Any], mac: str, deadline_s: float,
             wanted: tuple[str, bool]) -> tuple[str, bool] | None:
    """The latest NOTIFY's (outcome, challenged) once it is `wanted`, or the last seen."""
    row = None
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        row = conn.execute("SELECT outcome, challenged FROM autoprov.resync_status"
                           " WHERE mac = autoprov.normalize_mac(%s) AND outcome IS NOT NULL"
                           " ORDER BY request_id DESC LIMIT 1", (mac,)).fetchone()
        if row == wanted:
            break
        time.sleep(0.1)
    return None if row is None else (str(row[0]), bool(row[1]))


def test_a_challenge_shows_while_our_answer_waits_for_the_phone(
    registered_device: Callable[..., Device], conn: psycopg.Connection[Any]
) -> None:
    """The final reply records a challenge with it; a phone still silent a second after our
    answer has its challenge recorded meanwhile, for a DBA watching resync_status."""
    dev = registered_device()
    with dev.phone.answer("notify-challenge-silent", timeout=30) as uas:
        conn.execute("SELECT autoprov.request_resync(%s, 'test')", (dev.mac,))
        assert outcome_when(conn, dev.mac, 5, ("sent", True)) == ("sent", True)
        assert outcome_when(conn, dev.mac, 20, ("no_answer", True)) == ("no_answer", True)
        uas.result()


def test_subscription_state_is_the_vendors_and_sql_changes_it(
    registered_device: Callable[..., Device], settings: Settings,
    conn: psycopg.Connection[Any],
) -> None:
    dev = registered_device(vendor="panasonic", model="KX-UT136")
    conn.execute("UPDATE autoprov.vendor SET notify_subscription_state = "
                 "'terminated;reason=noresource' WHERE name = 'panasonic'")
    try:
        with dev.phone.answer("notify-accept") as uas:
            code, _ = resync_cli(settings, dev.mac)
            [notify] = uas.result().received("NOTIFY")
    finally:
        conn.execute("UPDATE autoprov.vendor SET notify_subscription_state = 'active' "
                     "WHERE name = 'panasonic'")
    check_notify_on_the_wire(notify, dev.sub, "check-sync", "terminated;reason=noresource")
    assert code == 0


def test_event_can_be_overridden_per_model_in_configuration(
    registered_device: Callable[..., Device], settings: Settings
) -> None:
    dev = registered_device(vendor="cisco", model=OVERRIDDEN_MODEL)
    with dev.phone.answer("notify-accept") as uas:
        code, _ = resync_cli(settings, dev.mac)
        [notify] = uas.result().received("NOTIFY")
    check_notify_on_the_wire(notify, dev.sub, "resync")
    assert code == 0


def test_phone_accepting_without_challenge(registered_device: Callable[..., Device],
                                           settings: Settings) -> None:
    dev = registered_device(vendor="panasonic", model="KX-UT136")
    with dev.phone.answer("notify-accept") as uas:
        code, info = resync_cli(settings, dev.mac)
        [notify] = uas.result().received("NOTIFY")
    check_notify_on_the_wire(notify, dev.sub, "check-sync")
    assert code == 0
    assert (info["contacts"][0]["outcome"], info["contacts"][0]["challenged"]) == \
        ("accepted", False)


def test_a_challenge_that_arrives_twice_is_answered_once(
    kamailio: RunningService, settings: Settings, new_subscriber: Any,
    conn: psycopg.Connection[Any],
) -> None:
    """Every reply reaches the core reply route, a repeated one too, in whichever worker: the
    phone's 401 sent twice back to back (as when it also answers a retransmission of the
    NOTIFY) gets one answer, and the outcome is that answer's."""
    sub = new_subscriber()
    _, host, port = settings.sip_listen[0].split(":")
    phone = UserAgent(sub.username, sub.domain, sub.password, (host, int(port)))
    try:
        assert status_of(phone.register()) == 200
        mac = add_device(settings, sub)
        first = phone.receive(timeout=10)
        assert first.startswith("NOTIFY "), first
        challenge = 'Digest realm="phone", nonce="n0nce-twice", qop="auth"'
        for _ in range(2):
            phone.reply(first, 401, "Unauthorized", to_tag="ph",
                        extra=(f"WWW-Authenticate: {challenge}",))
        answer = phone.receive(timeout=5)
        check_answer_in_dialog(first, answer)
        auth = sipdigest.header(answer, "Authorization")
        assert auth and sipdigest.valid(auth, "NOTIFY", sub.username, sub.password)
        phone.reply(answer, 200, "OK", to_tag="ph")
        with pytest.raises(TimeoutError):  # no second answer
            more = phone.receive(timeout=1.5)
            pytest.fail(f"a second answer: {more}")
    finally:
        phone.close()
    assert outcome_when(conn, mac, 5, ("accepted", True)) == ("accepted", True)


def test_phone_rejecting_our_credentials_is_challenge_failed(
    registered_device: Callable[..., Device], settings: Settings
) -> None:
    dev = registered_device()
    with dev.phone.answer("notify-challenge-401", password="the-phone-knows-another") as uas:
        code, info = resync_cli(settings, dev.mac)
        phone_side = uas.result()
    assert "AUTH-VERIFIED" not in phone_side.output
    assert code == 1
    assert info["contacts"][0]["outcome"] == "challenge_failed"
    assert info["contacts"][0]["code"] == 403


def test_phone_refusing_the_event_is_refused_with_its_code(
    registered_device: Callable[..., Device], settings: Settings
) -> None:
    dev = registered_device()
    with dev.phone.answer("notify-refuse") as uas:
        code, info = resync_cli(settings, dev.mac)
        uas.result()
    assert code == 1
    assert (info["contacts"][0]["outcome"], info["contacts"][0]["code"]) == ("refused", 489)


def test_offline_phone_is_no_answer(registered_device: Callable[..., Device],
                                    settings: Settings, conn: psycopg.Connection[Any]) -> None:
    dev = registered_device()  # registered, then gone: nobody listens on its contact any more
    code, info = resync_cli(settings, dev.mac, wait=30)
    assert code == 1
    assert info["contacts"][0]["outcome"] == "no_answer"
    # Not retried in a loop: it waits for the phone's next REGISTER.
    assert info["state"] == "pending"
    row = conn.execute("SELECT attempts FROM autoprov.resync_request WHERE id = %s",
                       (info["request_id"],)).fetchone()
    assert row == (1,)


def test_device_without_registered_contact_is_pending_then_sent_after_register(
    kamailio: RunningService, settings: Settings, new_subscriber: Any, phone_for: Any,
    conn: psycopg.Connection[Any],
) -> None:
    sub = new_subscriber()
    mac = add_device(settings, sub)
    phone = phone_for(sub)
    result = autoprov_cli(settings, "resync", mac, "--wait", "5", "--json")
    info = json.loads(result.stdout)
    assert result.returncode == 1
    assert (info["state"], info["contacts"]) == ("pending", [])
    assert "no registered contact" in autoprov_cli(settings, "resync", mac, "--wait", "5").stdout

    wait_pending_in_proxy(settings, sub.aor)
    with phone.answer("notify-challenge-401") as uas:
        assert phone.register().ok
        phone_side = uas.result()
    assert "AUTH-VERIFIED" in phone_side.output
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        state = conn.execute("SELECT state FROM autoprov.resync_request WHERE id = %s",
                             (info["request_id"],)).fetchone()
        if state == ("done",):
            break
        time.sleep(0.1)
    assert state == ("done",)


def test_a_phone_registering_right_after_its_device_is_created_gets_its_check_sync(
    kamailio: RunningService, settings: Settings, new_subscriber: Any, phone_for: Any,
) -> None:
    """No waiting for the proxy to learn the request: whatever the order of dispatch and
    REGISTER, the first REGISTER's phone gets its NOTIFY."""
    for _ in range(3):
        sub = new_subscriber()
        phone = phone_for(sub)
        with phone.answer("notify-accept", timeout=10) as uas:
            add_device(settings, sub)
            assert phone.register().ok
            assert uas.result().ok


def test_sql_request_resync_returns_the_request_and_duplicates_coalesce(
    kamailio: RunningService, settings: Settings, new_subscriber: Any,
    conn: psycopg.Connection[Any],
) -> None:
    sub = new_subscriber()
    mac = add_device(settings, sub)
    with conn.transaction():
        first = conn.execute("SELECT autoprov.request_resync(%s)", (mac,)).fetchone()
        second = conn.execute("SELECT autoprov.request_resync(%s)", (mac.upper(),)).fetchone()
    assert first == second
    assert first is not None
    rows = conn.execute("SELECT request_state FROM autoprov.resync_status WHERE request_id = %s",
                        (first[0],)).fetchall()
    assert rows == [("pending",)]
    with pytest.raises(psycopg.errors.NoDataFound, match="no device"):
        conn.execute("SELECT autoprov.request_resync('00:15:65:00:00:00')")


def test_sql_trigger_sends_at_once_to_a_registered_phone(
    registered_device: Callable[..., Device], settings: Settings, conn: psycopg.Connection[Any]
) -> None:
    dev = registered_device()
    with dev.phone.answer("notify-challenge-401") as uas:
        conn.execute("SELECT autoprov.request_resync(%s)", (dev.mac,))
        phone_side = uas.result()
    assert "AUTH-VERIFIED" in phone_side.output


@pytest.mark.parametrize("change", [
    "UPDATE autoprov.device_line SET display_name = 'Reception' WHERE device_id ="
    " (SELECT id FROM autoprov.device WHERE mac = %(mac)s)",
    "UPDATE autoprov.device SET model = 'T48U' WHERE mac = %(mac)s",
])
def test_config_change_resyncs_a_registered_phone(
    registered_device: Callable[..., Device], settings: Settings,
    conn: psycopg.Connection[Any], change: str,
) -> None:
    dev = registered_device()
    with dev.phone.answer("notify-challenge-401") as uas:
        conn.execute(change, {"mac": dev.mac})
        phone_side: SippResult = uas.result()
    assert "AUTH-VERIFIED" in phone_side.output, phone_side.output


def test_tcp_phone_gets_its_notify_over_tcp(registered_device: Callable[..., Device],
                                            settings: Settings) -> None:
    dev = registered_device(transport="tcp")
    with dev.phone.answer("notify-challenge-401") as uas:
        code, _ = resync_cli(settings, dev.mac)
        phone_side = uas.result()
    assert "AUTH-VERIFIED" in phone_side.output
    first = phone_side.received("NOTIFY")[0]
    assert "SIP/2.0/TCP" in (sipdigest.header(first, "Via") or "")
    assert code == 0


def test_phone_behind_nat_is_notified_where_its_register_came_from(
    kamailio: RunningService, settings: Settings, new_subscriber: Any, phone_for: Any,
) -> None:
    sub = new_subscriber()
    phone = phone_for(sub)
    # The phone thinks it is 192.168.1.50:5060 (its LAN address); its REGISTER arrives from
    # 127.0.0.1:<its port>, the NAT's public side, where its UAS then listens.
    assert phone.register(local_port=phone.port, contact_host="192.168.1.50",
                          contact_port=5060).ok
    with phone.answer("notify-challenge-401") as uas:
        mac = add_device(settings, sub)  # a new device for a registered line: resync at once
        phone_side = uas.result()
    assert "AUTH-VERIFIED" in phone_side.output
    first = phone_side.received("NOTIFY")[0]
    assert first.startswith(f"NOTIFY sip:{sub.username}@192.168.1.50:5060")
    info = json.loads(autoprov_cli(settings, "device", "show", mac, "--json").stdout)
    assert info["resync"]["contacts"][0]["outcome"] == "accepted"


def test_two_lines_two_contacts_each_with_its_own_credentials(
    kamailio: RunningService, settings: Settings, new_subscriber: Any, phone_for: Any,
) -> None:
    one, two = new_subscriber(), new_subscriber()
    phones = [phone_for(one), phone_for(two)]
    for phone in phones:
        assert phone.register().ok
    mac = random_mac()
    with phones[0].answer("notify-challenge-401") as uas1, \
            phones[1].answer("notify-challenge-401") as uas2:
        autoprov_cli(settings, "device", "add", mac, "--vendor", "yealink", "--model", "T46U",
                     "--line", f"1={one.aor}", "--line", f"2={two.aor}", check=True)
        results = [uas1.result(), uas2.result()]
    for sub, result in zip([one, two], results, strict=True):
        assert "AUTH-VERIFIED" in result.output
        first, retry = result.received("NOTIFY")
        check_notify_on_the_wire(first, sub, "check-sync;reboot=false")
        auth = sipdigest.header(retry, "Authorization") or ""
        assert sipdigest.valid(auth, "NOTIFY", sub.username, sub.password)
    info = json.loads(autoprov_cli(settings, "device", "show", mac, "--json").stdout)
    outcomes = {(c["line"], c["outcome"]) for c in info["resync"]["contacts"]}
    assert outcomes == {(1, "accepted"), (2, "accepted")}


def test_password_rotation_does_not_strand_the_phone(
    registered_device: Callable[..., Device], settings: Settings,
    conn: psycopg.Connection[Any],
) -> None:
    dev = registered_device()
    old = dev.sub.password
    new = "rotated-" + old
    # The phone still holds the old password: the NOTIFY must be answered with it.
    with dev.phone.answer("notify-challenge-401", password=old) as uas:
        conn.execute("UPDATE subscriber SET password = %s WHERE username = %s AND domain = %s",
                     (new, dev.sub.username, dev.sub.domain))
        phone_side = uas.result()
    assert "AUTH-VERIFIED" in phone_side.output
    # Until it has fetched its new config, it may still register with the old one.
    assert dataclasses.replace(dev.phone, password=old).register().ok
    # A phone that already has the new password gets it on the second try.
    with dev.phone.answer("notify-challenge-401", resyncs=2, password=new) as uas:
        code, info = resync_cli(settings, dev.mac)
        phone_side = uas.result()
    assert "AUTH-VERIFIED" in phone_side.output
    assert code == 0, json.dumps(info, default=str)
    [contact] = info["contacts"]
    assert (contact["outcome"], contact["credential"]) == ("accepted", "current")


def test_phone_that_fetched_its_config_since_the_change_gets_no_notify(
    kamailio: RunningService, settings: Settings, new_subscriber: Any, phone_for: Any,
    conn: psycopg.Connection[Any],
) -> None:
    sub = new_subscriber()
    mac = add_device(settings, sub)  # pending: no contact yet
    (rid,) = conn.execute("SELECT autoprov.request_resync(%s)", (mac,)).fetchone() or (0,)
    # What the provisioning service records when the phone fetches its full config over TLS.
    conn.execute("INSERT INTO autoprov.config_fetch (device_id, port, file, config_version)"
                 " SELECT id, 'tls', mac || '.cfg', 'v1' FROM autoprov.device WHERE mac = %s",
                 (mac,))
    (state,) = conn.execute("SELECT state FROM autoprov.resync_request WHERE id = %s",
                            (rid,)).fetchone() or ("",)
    assert state == "fetched"
    phone = phone_for(sub)
    assert phone.register().ok
    time.sleep(0.5)
    assert conn.execute("SELECT count(*) FROM autoprov.resync_status WHERE mac = %s"
                        " AND outcome IS NOT NULL", (mac,)).fetchone() == (0,)


def _fetch_while_a_request_is_held(settings: Settings, conn: psycopg.Connection[Any], mac: str,
                                   rid: int, hold_s: float | None,
                                   another_change: bool = False) -> tuple[bool, str]:
    """Another transaction holds the request while the phone's fetch is recorded: for `hold_s`,
    or (None) only until the recording is seen waiting for it, as a proxy's dispatch would; with
    `another_change`, it asks for a resync again (merged into the request) instead of only
    looking. Was the recording done before the request was let go, and the request's state
    after both."""
    with db.connect(settings) as holder:
        if another_change:
            assert holder.execute("SELECT autoprov.request_resync(%s)", (mac,)).fetchone() == \
                (rid,)
        else:
            holder.execute("SELECT 1 FROM autoprov.resync_request WHERE id = %s FOR UPDATE",
                           (rid,))

        def record() -> None:
            with db.connect(settings, autocommit=True) as writer:
                writer.execute(
                    "INSERT INTO autoprov.config_fetch (device_id, port, file, config_version)"
                    " SELECT id, 'tls', mac || '.cfg', 'v1' FROM autoprov.device WHERE mac = %s",
                    (mac,))

        fetch = threading.Thread(target=record)
        fetch.start()
        if hold_s is None:
            deadline = time.monotonic() + 5
            blocked = ("SELECT EXISTS (SELECT 1 FROM pg_stat_activity"
                       "               WHERE %s = ANY(pg_blocking_pids(pid)))")
            while conn.execute(blocked, (holder.info.backend_pid,)).fetchone() != (True,):
                assert time.monotonic() < deadline, "the fetch never waited for the request"
                time.sleep(0.005)
        else:
            fetch.join(timeout=hold_s)
        done_while_held = not fetch.is_alive()
        holder.commit()
    fetch.join(timeout=5)
    assert not fetch.is_alive()
    (state,) = conn.execute("SELECT state FROM autoprov.resync_request WHERE id = %s",
                            (rid,)).fetchone() or ("",)
    return done_while_held, state


def test_a_fetch_that_meets_a_dispatch_still_counts_as_fetched(
    settings: Settings, new_subscriber: Any, conn: psycopg.Connection[Any],
) -> None:
    """A proxy holds a pending request for milliseconds while it looks for the phone's
    contacts; a fetch recorded meanwhile waits for it rather than leave it pending."""
    mac = add_device(settings, new_subscriber())
    (rid,) = conn.execute("SELECT autoprov.request_resync(%s)", (mac,)).fetchone() or (0,)

    done_while_held, state = _fetch_while_a_request_is_held(settings, conn, mac, rid,
                                                            hold_s=None)

    assert not done_while_held
    assert state == "fetched"


def test_a_fetch_passes_by_a_request_held_by_a_change_still_being_made(
    settings: Settings, new_subscriber: Any, conn: psycopg.Connection[Any],
) -> None:
    """A transaction that holds the request for long (a DBA's, still at work) does not hold up
    the recording of fetches: it passes by after a moment, and the request stays pending."""
    mac = add_device(settings, new_subscriber())
    (rid,) = conn.execute("SELECT autoprov.request_resync(%s)", (mac,)).fetchone() or (0,)

    done_while_held, state = _fetch_while_a_request_is_held(settings, conn, mac, rid,
                                                            hold_s=3.0)

    assert done_while_held
    assert state == "pending"


def test_a_fetch_waiting_for_a_request_does_not_take_a_change_merged_into_it_meanwhile(
    settings: Settings, new_subscriber: Any, conn: psycopg.Connection[Any],
) -> None:
    """While the fetch waits, the holder merges a newer change into the pending request: the
    phone's config does not have that change, so the request stays pending."""
    mac = add_device(settings, new_subscriber())
    (rid,) = conn.execute("SELECT autoprov.request_resync(%s)", (mac,)).fetchone() or (0,)

    done_while_held, state = _fetch_while_a_request_is_held(settings, conn, mac, rid,
                                                            hold_s=None, another_change=True)

    assert not done_while_held
    assert state == "pending"


def test_a_change_while_notifies_are_out_waits_for_them_then_goes(
    registered_device: Callable[..., Device], settings: Settings,
    conn: psycopg.Connection[Any],
) -> None:
    dev = registered_device()
    with dev.phone.answer("notify-slow-accept", resyncs=2) as uas:
        first = conn.execute("SELECT autoprov.request_resync(%s)", (dev.mac,)).fetchone()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and conn.execute(
                "SELECT state FROM autoprov.resync_request WHERE id = %s",
                first).fetchone() != ("sending",):
            time.sleep(0.01)
        second = conn.execute("SELECT autoprov.request_resync(%s)", (dev.mac,)).fetchone()
        time.sleep(0.3)
        waiting = conn.execute("SELECT state FROM autoprov.resync_request WHERE id = %s",
                               second).fetchone()
        assert uas.result().ok
    assert waiting == ("pending",)
    rows = conn.execute(
        "SELECT request_id, min(sent_at), max(answered_at) FROM autoprov.resync_status"
        " WHERE request_id IN (%s, %s) GROUP BY request_id ORDER BY request_id",
        (first[0] if first else 0, second[0] if second else 0)).fetchall()
    assert len(rows) == 2
    # The second round went out only after the first was answered.
    assert rows[1][1] >= rows[0][2]
