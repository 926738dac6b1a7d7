"""A flood of malformed SIP costs a bounded number of short log lines, and the proxy answers."""

from __future__ import annotations

import random
import re
import socket
import time

from autoprov import sipprobe
from autoprov.config import Settings
from autoprov.logpipe import BURST, MAX_MESSAGE, PER_SECOND
from tests.conftest import RunningService

FLOOD = 10_000
TCP_FLOOD = 300
FLOODER = "127.0.0.9"  # pike bans it, as it should: the probe comes from 127.0.0.1
SUPPRESSED = re.compile(r"rate_limit\(\): suppressed (\d+) lines from (\S+) in ")
ORIGIN = re.compile(r"\) [A-Z]+: (?:\{[^}]*\} )?\S+ \[([^\]:]+):\d+\]")


def mutated(rng: random.Random, n: int) -> bytes:
    """A REGISTER with a few random bytes changed and a random tail: what a fuzzer sends."""
    data = bytearray(
        b"REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK%d"
        b"\r\nFrom: <sip:a@example.test>;tag=1\r\nTo: <sip:a@example.test>\r\nCall-ID: %d\r\n"
        b"CSeq: 1 REGISTER\r\nContact: <sip:a@127.0.0.1:5999>\r\nContent-Length: 0\r\n\r\n"
        % (n, n))
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data) + b"X" * rng.randint(0, 600)


def _answers_within(host: str, port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if sipprobe.options("udp", host, port, timeout=1.0)[0] == 200:
                return True
        except OSError:
            pass
    return False


def test_ten_thousand_malformed_messages_write_a_bounded_log(
    own_kamailio: tuple[Settings, RunningService],
) -> None:
    settings, running = own_kamailio
    _, host, port = sipprobe.parse_listen(settings.sip_listen[0])
    rng = random.Random(7)
    before = running.log_path.stat().st_size
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((FLOODER, 0))
        for n in range(FLOOD):
            sock.sendto(mutated(rng, n), (host, port))
            if n % 500 == 0:
                time.sleep(0.005)  # the flood, not the socket buffer's overflow, is measured
    for n in range(TCP_FLOOD):
        with socket.create_connection((host, port), timeout=2,
                                      source_address=(FLOODER, 0)) as tcp:
            tcp.sendall(mutated(rng, n).replace(b"UDP", b"TCP"))
    assert _answers_within(host, port, 30)  # still answering everyone once the queue is worked
    time.sleep(2.5)  # the last counts of suppressed lines are written once their second is over
    elapsed = time.monotonic() - started
    written = running.log_path.read_bytes()[before:].decode(errors="replace").splitlines()

    suppressed = [int(m[1]) for line in written if (m := SUPPRESSED.search(line))]
    origins = {m[1] for line in written if (m := ORIGIN.search(line))}
    # Per origin: a burst, then PER_SECOND a second, and a count line a second.
    bound = len(origins) * (BURST + (PER_SECOND + 1) * (elapsed + 2))
    assert len(written) <= bound, (len(written), bound, origins)
    assert sum(suppressed) > FLOOD  # several lines per rejected message, most of them counted
    assert max(len(line) for line in written) <= MAX_MESSAGE + 300
    # Unthrottled, Kamailio wrote about nine lines (1.2 KB) per malformed message.
    assert sum(len(line) + 1 for line in written) < FLOOD * 1200 / 20
