"""The shipped fail2ban filters (contrib/fail2ban) on the real log files of a running stack.

Every refusal comes from its own loopback address (127.0.0.0/8 all reaches the services), so
fail2ban-regex's answer can be checked per address: each refusal found once, with the address
it came from; successes, and addresses a client merely wrote into what it sent, never.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import re
import secrets
import shutil
import socket
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from requests.adapters import HTTPAdapter

from autoprov import db, stack, tls
from autoprov.config import ROOT, Settings
from tests.admin_helpers import ADMIN_USER, admin_settings, admin_url, browser_session
from tests.conftest import Subscriber, start_kamailio, start_provisioning
from tests.provisioning_helpers import (
    add_device,
    bootstrap_url,
    client,
    config_url,
    device_file,
    phone_cert,
)
from tests.sipp import Phone

CONTRIB = ROOT / "contrib" / "fail2ban"
FAIL2BAN_REGEX = "/usr/bin/fail2ban-regex"

# Who does what, one address each.
WRONG_PASSWORD, UNKNOWN_USER, USER_MISMATCH, REGISTERED = \
    "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"
FORGER = "127.0.0.6"  # refused itself, and writes other addresses into what it sends
# Where it writes them. Kamailio logs the first two whole, the user of the credentials cut
# short, and a header of its own never.
FORGED = {"call-id": "127.0.0.91", "unparsable": "127.0.0.92", "auth-user": "127.0.0.93",
          "header": "127.0.0.94"}
# Guesses passwords until Kamailio bans it (sip_auth_fail_limit, 10): ten refusals and the ban.
BANNED = "127.0.0.8"
# Sends nothing but requests with a refusal line written into one part each, over UDP and TCP.
EVERYWHERE = "127.0.0.7"
# Where: the request line, every header (its value folded onto a line of its own, and the line
# alone as a header line), the body. Each place its own forged address, 127.0.0.(100 + index).
PLACES = ("request-line", "Via", "From", "To", "Call-ID", "CSeq", "Contact", "User-Agent",
          "Max-Forwards", "Expires", "Authorization", "X-Custom", "raw-line", "body")
OTHER_DEVICE, EXPIRED, UNTRUSTED, PHONE = "127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"
OVERSIZED = "127.0.0.15"  # refused by the web front; claims another address in a header
WRONG_LOGIN, OPERATOR, CROSS_SITE = "127.0.0.21", "127.0.0.22", "127.0.0.23"

REFUSED_REGISTERS = {WRONG_PASSWORD: 3, UNKNOWN_USER: 2, USER_MISMATCH: 1, FORGER: 4, BANNED: 11}
REFUSED_FETCHES = {OTHER_DEVICE: 2, EXPIRED: 1, UNTRUSTED: 1, OVERSIZED: 2}
WRONG_LOGINS = {WRONG_LOGIN: 3}


class FromAddress(HTTPAdapter):
    """Connections from a chosen local address."""

    def __init__(self, address: str) -> None:
        self.address = address  # before super().__init__, which makes the pool
        super().__init__()

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block,
                                 source_address=(self.address, 0), **pool_kwargs)


def from_address(session: requests.Session, address: str) -> requests.Session:
    for scheme in ("http://", "https://"):
        session.mount(scheme, FromAddress(address))
    return session


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - SIP digest is MD5


def register_raw(proxy: tuple[str, int], source: str, *, user: str, password: str,
                 to_user: str = "nobody", call_id: bytes = b"", auth_user: bytes | None = None,
                 extra: bytes = b"") -> str:
    """A REGISTER answered with digest credentials, written byte by byte (sipp cannot fold a
    header); the status line of the answer to the second request."""
    auth_user = user.encode() if auth_user is None else auth_user
    call_id = call_id or secrets.token_hex(8).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.bind((source, 0))
        port = sock.getsockname()[1]

        def request(cseq: int, authorization: bytes) -> bytes:
            return (b"REGISTER sip:example.test SIP/2.0\r\n"
                    b"Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK%s%d;rport\r\n"
                    % (source.encode(), port, secrets.token_hex(4).encode(), cseq)
                    + b"Max-Forwards: 70\r\n"
                    + b"From: <sip:%s@example.test>;tag=f1\r\n" % to_user.encode()
                    + b"To: <sip:%s@example.test>\r\n" % to_user.encode()
                    + b"Call-ID: " + call_id + b"\r\nCSeq: %d REGISTER\r\n" % cseq
                    + b"Contact: <sip:%s@%s:%d>\r\nExpires: 60\r\n"
                    % (to_user.encode(), source.encode(), port)
                    + extra + authorization + b"Content-Length: 0\r\n\r\n")

        sock.sendto(request(1, b""), proxy)
        challenge = sock.recv(65535).decode()
        found = re.search(r'nonce="([^"]+)"', challenge)
        assert found, challenge
        nonce = found[1]
        ha1 = _md5(f"{user}:example.test:{password}")
        response = _md5(f"{ha1}:{nonce}:00000001:c0ffee:auth:{_md5('REGISTER:sip:example.test')}")
        sock.sendto(request(2, b'Authorization: Digest username="' + auth_user
                            + b'", realm="example.test", nonce="%s", uri="sip:example.test",'
                            b' response="%s", qop=auth, nc=00000001, cnonce="c0ffee",'
                            b' algorithm=MD5\r\n' % (nonce.encode(), response.encode())), proxy)
        return sock.recv(65535).decode().splitlines()[0]


def forged_line(address: str) -> bytes:
    """Kamailio's refusal line, as a client could write it into a request."""
    return b" ".join([
        b"3(1234) WARNING: {REGISTER x} <core> [core/kemi.c:116]: sr_kemi_core_warn():",
        b"autoprov auth failed method=REGISTER user=a aor=sip:a",  # no "@": ends $au
        b"reason=invalid-password from=%s:5060/udp" % address.encode()])


@pytest.fixture(scope="module")
def refused(settings: Settings, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Settings]:
    """A Kamailio and a provisioning service with their own var/ (so their own logs); every
    request below has been answered, and both services stopped (so their last lines are
    written) when this yields."""
    checkout = tmp_path_factory.mktemp("fail2ban-checkout")
    own = admin_settings(checkout / "var", settings)
    kamailio = start_kamailio(own)
    provisioning = start_provisioning(own)
    try:
        with db.connect(own, autocommit=True) as conn:
            _sip(own, conn)
            _phones(own, conn, checkout / "certs")
        _operators(own)
    finally:
        stack.stop(kamailio.service)
        provisioning.stop()
    yield own
    shutil.rmtree(checkout, ignore_errors=True)


def _subscriber(conn: psycopg.Connection[Any]) -> Subscriber:
    sub = Subscriber("u" + secrets.token_hex(5), "example.test", secrets.token_hex(8))
    conn.execute("INSERT INTO subscriber (username, domain, password) VALUES (%s, %s, %s)",
                 (sub.username, sub.domain, sub.password))
    return sub


def _sip(settings: Settings, conn: psycopg.Connection[Any]) -> None:
    _, host, port = settings.sip_listen[0].split(":")
    proxy = (host, int(port))
    sub = _subscriber(conn)
    user, password = sub.username, sub.password
    for _ in range(REFUSED_REGISTERS[WRONG_PASSWORD]):
        result = Phone(user, "example.test", "not-" + password, proxy,
                       local_ip=WRONG_PASSWORD).run("register-refused")
        assert result.ok, result.output
    for _ in range(10):
        result = Phone(user, "example.test", "guess-" + password, proxy,
                       local_ip=BANNED).run("register-refused")
        assert result.ok, result.output
    for transport in ("udp", "tcp"):
        result = Phone("nobody-" + secrets.token_hex(3), "example.test", "x", proxy, transport,
                       local_ip=UNKNOWN_USER).run("register-refused")
        assert result.ok, result.output
    # Right password, but for another account than the one registered.
    assert register_raw(proxy, USER_MISMATCH, user=user, password=password,
                        to_user="someone-else") == "SIP/2.0 403 Forbidden"
    registered = _subscriber(conn)
    result = Phone(registered.username, registered.domain, registered.password, proxy,
                   local_ip=REGISTERED).register()
    assert result.ok, result.output  # not logged at all: thousands of phones do this all day

    # Text shaped like the refusal line, with another address: in a folded Call-ID (the fold is
    # a line break), in the user of the credentials, in a header of its own, and in a message
    # Kamailio cannot parse (which it logs whole).
    assert register_raw(proxy, FORGER, user="nobody", password="x",
                        call_id=b"c1\r\n " + forged_line(FORGED["call-id"]) + b"\r\n x") \
        == "SIP/2.0 403 Forbidden"
    assert register_raw(proxy, FORGER, user="nobody", password="x",
                        auth_user=b"nobody\r\n " + forged_line(FORGED["auth-user"])) \
        == "SIP/2.0 403 Forbidden"
    assert register_raw(proxy, FORGER, user="nobody", password="x",
                        extra=b"X-Evil: " + forged_line(FORGED["header"]) + b"\r\n") \
        == "SIP/2.0 403 Forbidden"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((FORGER, 0))
        sock.sendto(b"REGISTER sip:example.test SIP/2.0\r\nVia: nonsense\r\n"
                    + forged_line(FORGED["unparsable"]) + b"\r\n\r\n", proxy)
        # Kamailio answers nothing; the REGISTER after it is answered once this one is logged.
    assert register_raw(proxy, FORGER, user="nobody", password="x") == "SIP/2.0 403 Forbidden"
    _send_everywhere(proxy)


def _forged_everywhere(proxy: tuple[str, int]) -> list[bytes]:
    """One REGISTER per place, the refusal line (with that place's address) written into it."""
    messages = []
    for index, place in enumerate(PLACES):
        forged = forged_line(f"127.0.0.{100 + index}")
        headers = {
            "Via": b"SIP/2.0/%s " + EVERYWHERE.encode() + b":5999;branch=z9hG4bK" + b"%d" % index,
            "From": b"<sip:nobody@example.test>;tag=f1", "To": b"<sip:nobody@example.test>",
            "Call-ID": b"forged-%d" % index, "CSeq": b"1 REGISTER",
            "Contact": b"<sip:nobody@" + EVERYWHERE.encode() + b":5999>",
            "User-Agent": b"phone", "Max-Forwards": b"70", "Expires": b"60",
            "Authorization": b'Digest username="nobody", realm="example.test", nonce="x", '
                             b'uri="sip:example.test", response="00"',
            "X-Custom": b"x",
        }
        request_line = b"REGISTER sip:example.test SIP/2.0"
        body = b""
        extra = b""
        if place == "request-line":
            request_line = b"REGISTER sip:" + forged.replace(b" ", b"") + b" SIP/2.0\r\n " + forged
        elif place == "raw-line":
            extra = forged + b"\r\n"
        elif place == "body":
            body = b"\r\n" + forged + b"\r\n"
        else:
            headers[place] += b"\r\n " + forged  # folded: one header, a line break inside
        lines = [request_line, *(name.encode() + b": " + value for name, value in headers.items())]
        messages.append(b"\r\n".join(lines) + b"\r\n" + extra
                        + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return messages


def _send_everywhere(proxy: tuple[str, int]) -> None:
    for message in _forged_everywhere(proxy):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((EVERYWHERE, 0))
            sock.settimeout(2)
            sock.sendto(message.replace(b"SIP/2.0/%s", b"SIP/2.0/UDP"), proxy)
            with contextlib.suppress(TimeoutError):
                sock.recv(65535)  # an answer, or none for what Kamailio cannot parse
        with socket.create_connection(proxy, timeout=2, source_address=(EVERYWHERE, 0)) as tcp:
            tcp.sendall(message.replace(b"SIP/2.0/%s", b"SIP/2.0/TCP"))
            with contextlib.suppress(TimeoutError):
                tcp.recv(65535)


def _phones(settings: Settings, conn: psycopg.Connection[Any], certs: Path) -> None:
    mac = add_device(conn, "cisco", [_subscriber(conn)])
    other = add_device(conn, "cisco", [_subscriber(conn)])
    file = device_file("cisco", mac)
    for _ in range(REFUSED_FETCHES[OTHER_DEVICE]):
        reply = from_address(client(settings, phone_cert(settings, certs / "other", "cisco",
                                                         other)), OTHER_DEVICE)\
            .get(config_url(settings, file))
        assert reply.status_code == 403
    now = dt.datetime.now(dt.UTC)
    expired = phone_cert(settings, certs / "expired", "cisco", mac,
                         not_before=now - dt.timedelta(days=400),
                         not_after=now - dt.timedelta(days=1))
    untrusted = phone_cert(settings, certs / "untrusted", "cisco", mac,
                           ca=tls.make_ca("someone else's CA"))
    for address, cert in ((EXPIRED, expired), (UNTRUSTED, untrusted)):
        reply = from_address(client(settings, cert), address).get(config_url(settings, file),
                                                                   timeout=10)
        assert reply.status_code == 403
    # Too large for the front: refused there, logged by the service with the real address.
    claims = {"X-Autoprov-Client": FORGED["header"], "X-Forwarded-For": FORGED["header"]}
    assert from_address(client(settings), OVERSIZED).get(
        bootstrap_url(settings, file), headers={**claims, "X-Big": "a" * 10000}).status_code == 431
    assert from_address(client(settings, phone_cert(settings, certs / "big", "cisco", mac)),
                        OVERSIZED).get(config_url(settings, "a" * 10000),
                                       headers=claims).status_code == 414
    phone = from_address(client(settings, phone_cert(settings, certs / "own", "cisco", mac)),
                         PHONE)
    assert phone.get(config_url(settings, file)).status_code == 200
    assert phone.get(bootstrap_url(settings, file)).status_code == 200


def _operators(settings: Settings) -> None:
    for _ in range(WRONG_LOGINS[WRONG_LOGIN]):
        guess = browser_session(settings, auth=(ADMIN_USER, "guess-" + secrets.token_hex(4)))
        assert from_address(guess, WRONG_LOGIN).get(admin_url(settings, "/admin/"))\
            .status_code == 401
    first = from_address(browser_session(settings, auth=None), OPERATOR)  # a browser's first
    assert first.get(admin_url(settings, "/admin/")).status_code == 401
    operator = from_address(browser_session(settings), OPERATOR)
    assert operator.get(admin_url(settings, "/admin/")).status_code == 200
    # A hostile page makes the operator's browser post, with the operator's login.
    victim = from_address(browser_session(settings), CROSS_SITE)
    assert victim.post(admin_url(settings, "/admin/devices/0002fd000001/resync"),
                       data={"x": "1"}, headers={"Origin": "https://evil.example"})\
        .status_code == 403


@functools.cache
def fail2ban_regex(log: Path, filter_name: str) -> tuple[tuple[str, str], ...]:
    """(address, line) for every failure fail2ban-regex finds with the shipped filter."""
    result = subprocess.run(
        [FAIL2BAN_REGEX, "--raw", "--out", "<ip> <msg>", str(log),
         str(CONTRIB / "filter.d" / f"{filter_name}.conf")],
        capture_output=True, text=True, check=True, timeout=60)
    return tuple((address, line) for address, _, line in
                 (row.partition(" ") for row in result.stdout.splitlines() if row))


def kamailio_log(settings: Settings) -> Path:
    return settings.log_dir / "kamailio.log"


def provisioning_log(settings: Settings) -> Path:
    return settings.log_dir / "provisioning.log"


def test_refused_registers_are_found_with_their_address_and_nothing_else(
    refused: Settings,
) -> None:
    matches = fail2ban_regex(kamailio_log(refused), "autoprov-sip")

    assert Counter(address for address, _ in matches) == REFUSED_REGISTERS
    reasons = Counter((address, re.findall(r" reason=(\S+)", line)[-1])
                      for address, line in matches)
    assert reasons[WRONG_PASSWORD, "invalid-password"] == 3
    assert reasons[UNKNOWN_USER, "unknown-user"] == 2
    assert reasons[USER_MISMATCH, "user-mismatch"] == 1
    assert any(line.endswith("/tcp") for address, line in matches if address == UNKNOWN_USER)
    assert [line for address, line in matches if address == BANNED and " banned " in line]


def test_an_address_a_client_wrote_into_its_request_is_not_found(refused: Settings) -> None:
    log = kamailio_log(refused).read_text(errors="replace")
    matches = fail2ban_regex(kamailio_log(refused), "autoprov-sip")

    for where, address in FORGED.items():
        if where in ("call-id", "unparsable"):
            assert f"from={address}:5060/udp" in log, where  # it is in the log, as text
        assert address not in {found for found, _ in matches}, where


def test_a_refusal_line_written_into_any_part_of_a_request_is_not_found(
    refused: Settings,
) -> None:
    matches = fail2ban_regex(kamailio_log(refused), "autoprov-sip")
    found = {address for address, _ in matches}
    log = kamailio_log(refused).read_text(errors="replace")

    assert EVERYWHERE not in found
    for index, place in enumerate(PLACES):
        assert f"127.0.0.{100 + index}" not in found, place
    # Kamailio logged what it could not parse, forged lines included, as text inside its lines.
    assert any(f"from=127.0.0.{100 + index}:5060/udp" in log for index in range(len(PLACES)))
    # No line starts with anything but the date, and the date with anything but Kamailio's
    # process number or the log pipe's fixed marker.
    shape = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "
                       r"(?: ?\d+\(\d+\) [A-Z]+: |kamailio output: )")
    assert [line for line in log.splitlines() if not shape.match(line)] == []


def test_every_kamailio_line_has_the_date_and_time(refused: Settings) -> None:
    lines = kamailio_log(refused).read_text(errors="replace").splitlines()

    assert len(lines) > 10
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
    assert [line for line in lines if not stamp.match(line)] == []
    # Its last lines, written while it stopped, are there too.
    assert any("signal 15 received" in line for line in lines[-20:])


def test_refused_phone_fetches_are_found_and_successful_ones_are_not(refused: Settings) -> None:
    log = provisioning_log(refused).read_text()
    matches = fail2ban_regex(provisioning_log(refused), "autoprov-provisioning")

    assert Counter(address for address, _ in matches) == REFUSED_FETCHES
    assert all("reason=certificate-names-another-device" in line
               for address, line in matches if address == OTHER_DEVICE)
    assert f"access client={PHONE} port=tls method=GET" in log
    assert f"access client={PHONE} port=bootstrap method=GET" in log


def test_wrong_logins_are_found_and_the_operators_own_requests_are_not(refused: Settings) -> None:
    log = provisioning_log(refused).read_text()
    matches = fail2ban_regex(provisioning_log(refused), "autoprov-admin")

    assert Counter(address for address, _ in matches) == WRONG_LOGINS
    assert f"access client={OPERATOR} port=admin method=GET path=/admin/ status=401" \
           " reason=no-credentials" in log
    assert f"access client={OPERATOR} port=admin method=GET path=/admin/ status=200" in log
    # Refused, but banning on it would let a web page lock the operator out.
    assert f"denied client={CROSS_SITE} port=admin reason=csrf" in log


def test_the_filters_read_the_same_lines_from_the_journal(refused: Settings,
                                                         tmp_path: Path) -> None:
    # The installed services log to the journal; fail2ban's systemd backend hands a filter
    # "HOST IDENTIFIER[PID]: MESSAGE" and the entry's date apart (here in front, for
    # fail2ban-regex to read a file). Kamailio's message has no date; the service's has its own.
    for log, name, expected in ((kamailio_log(refused), "autoprov-sip", REFUSED_REGISTERS),
                                (provisioning_log(refused), "autoprov-provisioning",
                                 REFUSED_FETCHES),
                                (provisioning_log(refused), "autoprov-admin", WRONG_LOGINS)):
        journal = tmp_path / f"{name}.journal"
        journal.write_text("".join(
            f"{line[:23]} prov1 autoprov[42]: {line[24:] if name == 'autoprov-sip' else line}\n"
            for line in log.read_text(errors="replace").splitlines()))

        assert Counter(address for address, _ in fail2ban_regex(journal, name)) == expected


def test_the_jails_load_as_the_readme_installs_them(refused: Settings, tmp_path: Path) -> None:
    etc = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", etc)
    for jail in (etc / "jail.d").iterdir():  # only ours: the host's may name absent logs
        jail.unlink()
    for name in ("autoprov-sip", "autoprov-provisioning", "autoprov-admin"):
        shutil.copy(CONTRIB / "filter.d" / f"{name}.conf", etc / "filter.d")
    checkout = refused.var_dir.parent  # var/ of this "checkout" holds the logs
    (etc / "jail.d" / "autoprov.conf").write_text(
        (CONTRIB / "jail.d" / "autoprov.conf").read_text().replace("CHECKOUT", str(checkout)))

    test = subprocess.run(["fail2ban-client", "-c", str(etc), "--test"], capture_output=True,
                          text=True, timeout=60)
    dump = subprocess.run(["fail2ban-client", "-c", str(etc), "--dump"], capture_output=True,
                          text=True, timeout=60).stdout

    assert "configuration test is successful" in test.stdout + test.stderr, test.stderr
    for jail, log in (("autoprov-sip", kamailio_log(refused)),
                      ("autoprov-provisioning", provisioning_log(refused)),
                      ("autoprov-admin", provisioning_log(refused))):
        assert f"['set', '{jail}', 'addlogpath', '{log}', 'head']" in dump
