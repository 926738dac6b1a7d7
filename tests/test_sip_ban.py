"""A source that keeps guessing passwords is banned; every other source registers as before."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoprov import sipprobe
from autoprov.config import Settings
from tests.conftest import RunningService, make_settings, start_kamailio
from tests.sipp import Phone

GUESSER, NEIGHBOUR = "127.0.0.31", "127.0.0.32"
LIMIT = 5


@pytest.fixture
def strict(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, RunningService]]:
    own = make_settings(tmp_path / "var", db_url=settings.db_url, sip_auth_fail_limit=LIMIT)
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
