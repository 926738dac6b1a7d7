"""The socket file objects the provisioning service reads requests and writes responses through,
over real connected sockets."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator

import pytest

from autoprov.config import Settings
from provisioning_wsgi.sockfile import MAX_HELD, SocketReader, SocketWriter
from tests.conftest import RunningService


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(2)
    b.settimeout(2)
    yield a, b
    a.close()
    b.close()


def test_lines_split_across_packets_and_size_limits(
        pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    reader = SocketReader(ours)
    peer.sendall(b"GET / HT")
    sender = threading.Timer(0.05, peer.sendall, (b"TP/1.1\r\nHost: x\r\n\r\nbody-rest",))
    sender.start()
    assert reader.readline() == b"GET / HTTP/1.1\r\n"
    sender.join()
    assert reader.readline(4) == b"Host"  # cut at the limit, the rest stays
    assert reader.readline(256) == b": x\r\n"
    assert next(reader) == b"\r\n"
    assert reader.has_data()
    assert reader.read(4) == b"body"
    peer.shutdown(socket.SHUT_WR)
    assert reader.read() == b"-rest"
    assert not reader.has_data()
    assert reader.readline() == b""
    assert reader.bytes_read == len(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody-rest")


def test_a_large_body_is_read_whole(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    body = bytes(range(256)) * 4096  # 1 MiB: many recv calls
    threading.Thread(target=peer.sendall, args=(body,), daemon=True).start()
    assert SocketReader(ours, 8192).read(len(body)) == body


def test_a_silent_peer_times_out(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, _peer = pair
    ours.settimeout(0.1)
    with pytest.raises(TimeoutError):
        SocketReader(ours).readline()


def test_a_response_is_held_until_flushed_then_sent_whole(
        pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    writer = SocketWriter(ours)
    assert writer.write(b"HTTP/1.1 200 OK\r\n\r\n") == 19
    assert writer.write(b"body") == 4
    peer.settimeout(0.1)
    with pytest.raises(TimeoutError):
        peer.recv(100)  # headers alone never go out
    writer.flush()
    assert peer.recv(100) == b"HTTP/1.1 200 OK\r\n\r\nbody"
    assert writer.bytes_written == 23


def test_the_reader_sends_what_is_held_before_it_waits(
        pair: tuple[socket.socket, socket.socket]) -> None:
    """E.g. "100 Continue": the client sends its body only once it has it."""
    ours, peer = pair
    reader, writer = SocketReader(ours), SocketWriter(ours)
    reader.before_wait = writer.flush
    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def client() -> None:
        assert peer.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        peer.sendall(b"the body")

    thread = threading.Thread(target=client)
    thread.start()
    assert reader.read(8) == b"the body"
    thread.join()


def test_a_large_response_is_not_held_whole(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    writer = SocketWriter(ours)
    received = bytearray()
    thread = threading.Thread(target=lambda: received.extend(peer.recv(1 << 20)))
    thread.start()
    writer.write(b"x" * (MAX_HELD + 1))  # sent without a flush
    thread.join(timeout=2)
    assert received


def test_the_service_answers_two_requests_on_one_connection(
        settings: Settings, provisioning: RunningService) -> None:
    """Keep-alive: the second request is read from what is left in the buffer or the socket."""
    conn = http.client.HTTPConnection("127.0.0.1", settings.http_port, timeout=5)
    try:
        for _ in range(2):
            conn.request("GET", "/device/autoprov/bootstrap/not-a-phone-file")
            response = conn.getresponse()
            assert response.status == 404
            assert response.read() == b"404 not found\n"
    finally:
        conn.close()
