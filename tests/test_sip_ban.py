"""A source that keeps guessing passwords is banned; every other source registers as before."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoprov import sipprobe
from autoprov.config import Settings
from tests.conftest import RunningService, make_settings, start_kamailio
from tests.sipp import Phone

GUESSER, NEIGHBOUR, FLOODER = "127.0.0.31", "127.0.0.32", "127.0.0.33"
LIMIT = 5
FLOOD_PER_2S = 50


@pytest.fixture
def strict(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, RunningService]]:
    own = make_settings(tmp_path / "var", db_url=settings.db_url, sip_auth_fail_limit=LIMIT,
                        sip_pike_per_2s=FLOOD_PER_2S)
    running = start_kamailio(own)
    yield own, running
    running.stop()


def test_wrong_passwords_get_the_source_banned_while_others_register(
    strict: tuple[Settings, RunningService], new_subscriber: Any,
) -> None:
    own, running = strict
    _, host, port = sipprobe.parse_listen(own.sip_listen[0])
    victim, neighbour = new_subscriber(), new_subscriber()

    answered = 0
    for _ in range(60):
        guess = Phone(victim.username, victim.domain, "guess", (host, port), local_ip=GUESSER)
        if not guess.run("register-refused", timeout=1).ok:
            break
        answered += 1

    assert answered == LIMIT  # each refused with 403, then no answer at all
    lines = re.findall(r"autoprov banned from=(\S+) ", running.log())
    assert lines == [GUESSER]
    phone = Phone(neighbour.username, neighbour.domain, neighbour.password, (host, port),
                  local_ip=NEIGHBOUR)
    assert phone.register().ok


def _options(proxy: tuple[str, int], source: str, n: int) -> int:
    """Send `n` OPTIONS from `source` at once; how many were answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        port = sock.getsockname()[1]
        for i in range(n):
            sock.sendto((f"OPTIONS sip:example.test SIP/2.0\r\n"
                         f"Via: SIP/2.0/UDP {source}:{port};branch=z9hG4bKfl{i};rport\r\n"
                         f"Max-Forwards: 70\r\nFrom: <sip:f@example.test>;tag=f{i}\r\n"
                         f"To: <sip:example.test>\r\nCall-ID: flood-{i}@{source}\r\n"
                         f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(), proxy)
        sock.settimeout(1)
        answered = 0
        try:
            while sock.recv(65535):
                answered += 1
        except TimeoutError:
            return answered


def test_a_flooding_source_is_banned_while_others_are_answered(
    strict: tuple[Settings, RunningService],
) -> None:
    own, running = strict
    _, host, port = sipprobe.parse_listen(own.sip_listen[0])

    assert _options((host, port), FLOODER, 4 * FLOOD_PER_2S) < 4 * FLOOD_PER_2S
    assert _options((host, port), FLOODER, 1) == 0  # banned: no answer even when slow
    assert _options((host, port), NEIGHBOUR, 1) == 1
    assert re.findall(r"autoprov banned from=(\S+) reason=flood", running.log()) == [FLOODER]
