"""A dead Kamailio process does not leave the proxy down: the supervisor restarts it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from autoprov import kamailio, sipprobe, stack
from autoprov.config import Settings
from tests.conftest import RunningService
from tests.sipp import Phone

RESTART_LINE = "autoprov supervisor: kamailio"


def _answers(settings: Settings) -> bool:
    _, host, port = sipprobe.parse_listen(settings.sip_listen[0])
    try:
        return sipprobe.options("udp", host, port, timeout=0.5)[0] == 200
    except OSError:
        return False


def _udp_worker(settings: Settings) -> int:
    processes = kamailio.rpc(settings, "core.psx")
    return next(int(p["PID"]) for p in processes if p["DSC"].startswith("udp receiver"))


def test_a_killed_worker_brings_sip_back_within_seconds_with_bindings_kept(
    own_kamailio: tuple[Settings, RunningService], new_subscriber: Any,
) -> None:
    settings, running = own_kamailio
    _, host, port = sipprobe.parse_listen(settings.sip_listen[0])
    sub = new_subscriber()
    assert Phone(sub.username, sub.domain, sub.password, (host, port)).register().ok
    worker = _udp_worker(settings)

    os.kill(worker, signal.SIGKILL)

    deadline = time.monotonic() + 10
    while _answers(settings) and time.monotonic() < deadline:
        time.sleep(0.05)  # Kamailio stops all its processes: the proxy goes down first ...
    while not _answers(settings) and time.monotonic() < deadline:
        time.sleep(0.1)  # ... and is back well within 10 s
    assert _answers(settings), running.log()[-3000:]
    assert _udp_worker(settings) != worker
    # The phone need not register again: its binding was loaded back from `location`.
    found = kamailio.rpc(settings, "ul.lookup", "location", sub.aor)
    assert sub.username in str(found)
    restarts = [line for line in running.log().splitlines() if RESTART_LINE in line]
    assert len(restarts) == 1 and "restart 1 in" in restarts[0], restarts
    # The supervisor itself stays the service's process (pid files and `down` name it).
    assert running.service.process is not None and running.service.process.poll() is None


def test_stopping_the_service_stops_kamailio_and_its_supervisor(
    own_kamailio: tuple[Settings, RunningService],
) -> None:
    settings, running = own_kamailio
    assert running.service.process is not None
    group = running.service.process.pid

    stack.stop(running.service)

    assert not _answers(settings)
    alive = [p.name for p in Path("/proc").iterdir() if p.name.isdigit() and _in_group(p, group)]
    assert alive == []
    assert RESTART_LINE not in running.log()


def _in_group(proc: Path, group: int) -> bool:
    try:
        return os.getpgid(int(proc.name)) == group
    except ProcessLookupError:
        return False
