"""Clients that connect and say nothing, drip their request a byte at a time, send too much, or
open too many connections cannot keep the web ports from answering anyone else (issue 19).

One stack with the web front's limits made small (front_* settings), so that what production
bounds in seconds is seen here in a few."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from autoprov.config import Settings
from tests.admin_helpers import admin_settings, admin_url, browser_session
from tests.conftest import RunningService, start_provisioning
from tests.provisioning_helpers import bootstrap_url, client, config_url, phone_cert

CONNECTIONS = 64
TIMEOUT_S = 2  # front_timeout_s and front_keepalive_s here
PER_ADDRESS = 8  # front_connections_per_address here
ATTACKER = "127.0.0.2"
ANSWERED_WITHIN_S = 1.0
PORTS = ("bootstrap", "tls", "admin")


@pytest.fixture(scope="module")
def hostile(settings: Settings, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Settings, RunningService, Path]]:
    own = admin_settings(tmp_path_factory.mktemp("hostile") / "var", settings,
                         front_timeout_s=TIMEOUT_S, front_keepalive_s=TIMEOUT_S,
                         front_max_header_kb=2, front_connections_per_address=PER_ADDRESS,
                         http_workers=1)
    running = start_provisioning(own)
    cert = phone_cert(own, tmp_path_factory.mktemp("phone"), "yealink", "001565000001")
    yield own, running, cert[0].parent
    running.stop()


def port_of(settings: Settings, label: str) -> int:
    return {"bootstrap": settings.http_port, "tls": settings.https_port,
            "admin": settings.admin_port}[label]


def normal_request(settings: Settings, certs: Path, label: str) -> Callable[[], int]:
    """A phone's fetch or an operator's page on that port; returns its status. Asked once
    here, so that what a first request costs anyway (templates compiled, the front's first
    connection to the service) is not counted against the attack."""
    request = _request(settings, certs, label)
    request()
    return request


def _request(settings: Settings, certs: Path, label: str) -> Callable[[], int]:
    if label == "bootstrap":
        return lambda: client(settings).get(bootstrap_url(settings, "y000000000108.cfg"),
                                            timeout=5).status_code
    if label == "tls":
        phone = client(settings, (certs / "cert.pem", certs / "key.pem"))
        return lambda: phone.get(config_url(settings, "001565000001.cfg"), timeout=5).status_code
    return lambda: browser_session(settings).get(admin_url(settings, "/admin/"),
                                                 timeout=5).status_code


def answered_quickly(request: Callable[[], int]) -> float:
    started = time.monotonic()
    assert request() in (200, 404)  # 404: the phone's device is not in the database
    return time.monotonic() - started


def attacker_socket(settings: Settings, label: str, certs: Path) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port_of(settings, label)), timeout=10,
                                    source_address=(ATTACKER, 0))
    if label == "bootstrap":
        return sock
    # On the TLS ports the handshake is done first: what drips then is the request itself.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if label == "tls":  # a phone's own certificate: it gets as far as any phone
        context.load_cert_chain(certs / "cert.pem", certs / "key.pem")
    return context.wrap_socket(sock)


@contextlib.contextmanager
def held_open(sockets: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass  # an answer (408 or 400) before the close is fine
    except TimeoutError:
        return False
    except OSError:
        return True  # reset: closed all the same
    return True


@pytest.mark.parametrize("label", PORTS)
def test_idle_connections_leave_the_port_to_everyone_else_and_are_closed(
    hostile: tuple[Settings, RunningService, Path], label: str,
) -> None:
    settings, _running, certs = hostile
    request = normal_request(settings, certs, label)
    raw = [socket.create_connection(("127.0.0.1", port_of(settings, label)), timeout=10,
                                    source_address=(ATTACKER, 0)) for _ in range(CONNECTIONS)]
    with held_open(raw):
        assert answered_quickly(request) < ANSWERED_WITHIN_S
        assert answered_quickly(request) < ANSWERED_WITHIN_S
        started = time.monotonic()
        assert all(closed_by_server(sock, TIMEOUT_S + 3) for sock in raw[:4])
        assert time.monotonic() - started < TIMEOUT_S + 3


@pytest.mark.parametrize("label", PORTS)
def test_connections_dripping_a_request_leave_the_port_to_everyone_else_and_are_closed(
    hostile: tuple[Settings, RunningService, Path], label: str,
) -> None:
    settings, _running, certs = hostile
    request = normal_request(settings, certs, label)
    text = f"GET /device/autoprov/bootstrap/y000000000108.cfg HTTP/1.1\r\nHost: x\r\n" \
           f"User-Agent: {'a' * 100}\r\n\r\n".encode()
    with held_open([attacker_socket(settings, label, certs) for _ in range(CONNECTIONS)]) as drips:
        stop = threading.Event()
        closed: set[int] = set()

        def drip() -> None:
            position = 0
            while not stop.wait(0.5):  # a byte every half second on each connection
                for index, sock in enumerate(drips):
                    if index in closed:
                        continue
                    try:
                        sock.send(text[position:position + 1])
                    except OSError:
                        closed.add(index)
                position += 1

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        try:
            time.sleep(1.2)
            assert answered_quickly(request) < ANSWERED_WITHIN_S
            assert answered_quickly(request) < ANSWERED_WITHIN_S
            # Still sending, yet cut off once the request took longer than front_timeout_s.
            deadline = time.monotonic() + TIMEOUT_S + 4
            while len(closed) < CONNECTIONS and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(closed) == CONNECTIONS
        finally:
            stop.set()
            dripper.join()


def test_a_kept_alive_connection_that_stays_idle_is_closed(
    hostile: tuple[Settings, RunningService, Path],
) -> None:
    settings, _running, _certs = hostile
    with socket.create_connection(("127.0.0.1", settings.http_port), timeout=10) as sock:
        sock.sendall(b"GET /device/autoprov/bootstrap/y000000000108.cfg HTTP/1.1\r\n"
                     b"Host: x\r\n\r\n")
        time.sleep(0.2)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        assert closed_by_server(sock, TIMEOUT_S + 3)
        assert time.monotonic() - started >= TIMEOUT_S - 0.5


def raw_request(settings: Settings, label: str, certs: Path, data: bytes) -> bytes:
    sock = attacker_socket(settings, label, certs)
    with sock:
        sock.sendall(data)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


@pytest.mark.parametrize("label", PORTS)
def test_a_request_line_or_header_too_large_is_refused_and_logged(
    hostile: tuple[Settings, RunningService, Path], label: str,
) -> None:
    settings, running, certs = hostile
    long_line = raw_request(settings, label, certs, b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\n"
                            b"Host: x\r\n\r\n")
    long_header = raw_request(settings, label, certs, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: "
                              + b"a" * 3000 + b"\r\n\r\n")
    huge = raw_request(settings, label, certs, b"GET / HTTP/1.1\r\nHost: x\r\n"
                       + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 1000) for i in range(200))
                       + b"\r\n")

    assert long_line.startswith(b"HTTP/1.1 414 ")
    assert long_header.startswith(b"HTTP/1.1 431 ")
    assert huge.startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 400 "))
    log = running.wait_for_log(f"denied client={ATTACKER} port={label} reason=header-too-large")
    assert f"denied client={ATTACKER} port={label} reason=request-line-too-long" in log


def test_a_body_too_large_for_an_operators_form_is_refused_and_logged(
    hostile: tuple[Settings, RunningService, Path],
) -> None:
    settings, running, _certs = hostile
    session = browser_session(settings)
    reply = session.post(admin_url(settings, "/admin/devices/001565000001/resync"),
                         data={"x": "a" * 20000}, timeout=10)

    assert reply.status_code == 413
    running.wait_for_log("denied client=127.0.0.1 port=admin reason=body-too-large")


@pytest.mark.parametrize("label", PORTS)
def test_one_address_gets_a_bounded_number_of_connections_and_others_are_served(
    hostile: tuple[Settings, RunningService, Path], label: str,
) -> None:
    settings, running, certs = hostile
    # Requests under way: their header is in, their body is still to come.
    started = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    with held_open([attacker_socket(settings, label, certs) for _ in range(PER_ADDRESS)]) as busy:
        for sock in busy:
            sock.sendall(started)
        time.sleep(0.3)

        one_more = raw_request(settings, label, certs,
                               b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        other_address = normal_request(settings, certs, label)

        assert one_more.startswith(b"HTTP/1.1 429 ")
        assert answered_quickly(other_address) < ANSWERED_WITHIN_S
    running.wait_for_log(f"access client={ATTACKER} port={label} status=429 "
                         "reason=too-many-connections")


def test_the_front_sets_the_client_address_whatever_the_client_claims(
    hostile: tuple[Settings, RunningService, Path],
) -> None:
    settings, running, _certs = hostile
    reply = requests.get(bootstrap_url(settings, "no-such-file.txt"), timeout=5, headers={
        "X-Autoprov-Client": "192.0.2.66", "X-Autoprov-Refused": "400",
        "X-Autoprov-Verify": "SUCCESS"})
    assert reply.status_code == 404
    log = running.wait_for_log("file=no-such-file.txt")
    assert "192.0.2.66" not in log
    assert "access client=127.0.0.1 port=bootstrap method=GET file=no-such-file.txt" in log


@pytest.mark.parametrize("label", PORTS)
def test_the_fronts_idle_connections_to_the_service_hold_none_of_its_threads(
    hostile: tuple[Settings, RunningService, Path], label: str,
) -> None:
    """After a burst the front keeps connections to the service open for the next requests;
    waiting there, they must not be what the service's few threads are busy with."""
    settings, _running, certs = hostile
    burst = [normal_request(settings, certs, label) for _ in range(PER_ADDRESS)]
    with ThreadPoolExecutor(PER_ADDRESS) as pool:
        assert set(pool.map(lambda request: request(), burst)) <= {200, 404}
    request = normal_request(settings, certs, label)
    for _ in range(3):
        assert answered_quickly(request) < ANSWERED_WITHIN_S
        time.sleep(0.5)  # idle upstream connections stay open meanwhile (front.UPSTREAM_IDLE_S)


def test_a_phone_cannot_claim_another_certificate_in_the_fronts_headers(
    hostile: tuple[Settings, RunningService, Path],
) -> None:
    settings, running, certs = hostile
    other = "001565000002.cfg"
    claims = {"X-Autoprov-Verify": "SUCCESS", "X-Autoprov-Subject": "CN=001565000002",
              "X-Autoprov-Client": "192.0.2.67"}
    phone = client(settings, (certs / "cert.pem", certs / "key.pem"))

    assert phone.get(config_url(settings, other), headers=claims, timeout=5).status_code == 403
    assert client(settings).get(config_url(settings, other), headers=claims,
                                timeout=5).status_code == 403
    log = running.wait_for_log("detail=peer-did-not-return-a-certificate")
    assert "denied client=127.0.0.1 port=tls reason=certificate-names-another-device " \
           f"file={other}" in log
    assert "192.0.2.67" not in log
