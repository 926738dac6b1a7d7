"""Kamailio's log pipe (autoprov/logpipe.py) as the stack runs it: lines in, dated lines out."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoprov import stack
from autoprov.config import ROOT
from autoprov.logpipe import MAX_LINE

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "


@pytest.fixture
def pipe(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    log = tmp_path / "kamailio.log"
    proc = subprocess.Popen([sys.executable, "-m", "autoprov.logpipe", str(log)],
                            stdin=subprocess.PIPE, cwd=ROOT)
    yield proc, log
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def send(proc: subprocess.Popen[bytes], data: bytes) -> None:
    assert proc.stdin is not None
    proc.stdin.write(data)
    proc.stdin.flush()


def wait_for(path: Path, needle: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if needle in text:
            return text
        time.sleep(0.02)
    raise AssertionError(f"{needle!r} not in {path}")


def test_every_line_is_dated_and_none_is_lost_when_the_group_is_stopped(
    pipe: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, log = pipe
    send(proc, b" 0(12) INFO: first\n par")
    wait_for(log, "first")
    proc.send_signal(signal.SIGTERM)  # as `down` stops Kamailio's process group
    proc.send_signal(signal.SIGINT)
    send(proc, b"tial\n 0(12) INFO: last, without its newline")
    assert proc.stdin is not None
    proc.stdin.close()

    assert proc.wait(timeout=10) == 0
    lines = log.read_text().splitlines()
    assert [re.sub(STAMP, "", line, count=1) for line in lines] == \
        [" 0(12) INFO: first", " partial", " 0(12) INFO: last, without its newline"]
    assert all(re.match(STAMP, line) for line in lines)


def test_an_over_long_line_is_cut_and_its_rest_never_becomes_a_line(
    pipe: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, log = pipe
    forged = b" 3(1) WARNING: looks like a line of its own"
    send(proc, b"x" * (MAX_LINE - 10) + b"y" * 10 + b"z" * 50_000 + forged + b"\nnext\n")
    assert proc.stdin is not None
    proc.stdin.close()

    assert proc.wait(timeout=10) == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(STAMP + "x+y{10} \\[line truncated\\]", lines[0])
    assert len(lines[0].split(" ", 2)[2]) == MAX_LINE + len(" [line truncated]")
    assert re.fullmatch(STAMP + "next", lines[1])


def test_sighup_reopens_the_file_for_logrotate(
    pipe: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, log = pipe
    send(proc, b"before\n")
    wait_for(log, "before")
    rotated = log.rename(log.with_suffix(".log.1"))

    proc.send_signal(signal.SIGHUP)
    # The next line read after the signal goes to the new file: send until one arrives there.
    for n in range(200):
        send(proc, b"after %d\n" % n)
        if log.exists() and "after" in log.read_text():
            break
        time.sleep(0.02)
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0

    old, new = rotated.read_text(), log.read_text()
    assert "before" in old and "before" not in new
    first_new = int(re.findall(r"after (\d+)", new)[0])
    assert [int(n) for n in re.findall(r"after (\d+)", old)] == list(range(first_new))


def test_a_proxy_stopped_right_after_its_start_still_has_its_last_lines(tmp_path: Path) -> None:
    # Say, a proxy that cannot bind its port: it exits at once, and `make up` stops its group
    # while the pipe may still be starting.
    proxy = stack.Service("kamailio", ["echo", " 0(1) ERROR: bind failed"], dict(os.environ),
                          lambda: None, timestamp_log=True)
    log = tmp_path / "kamailio.log"

    stack.spawn(proxy, log)
    assert proxy.process is not None
    proxy.process.wait()
    stack.stop(proxy)

    assert re.fullmatch(STAMP + " 0\\(1\\) ERROR: bind failed\n", log.read_text())
