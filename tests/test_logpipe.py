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
    record = ('{ "idx": 0, "pid": 1, "level": "ERROR", "module": "core", "file": "core/socket.c",'
              ' "line": 7, "function": "bind", "message": "bind failed" }')
    proxy = stack.Service("kamailio", ["echo", record], dict(os.environ),
                          lambda: None, timestamp_log=True)
    log = tmp_path / "kamailio.log"

    stack.spawn(proxy, log)
    assert proxy.process is not None
    proxy.process.wait()
    stack.stop(proxy)

    assert re.fullmatch(STAMP + " 0\\(1\\) ERROR: <core> \\[core/socket.c:7\\]: bind\\(\\): "
                        "bind failed\n", log.read_text())


def test_the_log_rotates_by_size_and_keeps_what_it_is_told(tmp_path: Path) -> None:
    log = tmp_path / "kamailio.log"
    proc = subprocess.Popen([sys.executable, "-m", "autoprov.logpipe", "--kamailio",
                             "--max-bytes", "4000", "--keep", "2", str(log)],
                            stdin=subprocess.PIPE, cwd=ROOT)
    records = b"".join(
        b'{ "idx": 1, "pid": 7, "level": "WARNING", "module": "core", "file": "core/kemi.c", '
        b'"line": 1, "function": "w", "message": "autoprov line %d" }\n' % n for n in range(300))
    send(proc, records)
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0

    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["kamailio.log", "kamailio.log.1", "kamailio.log.2"]
    assert all((tmp_path / name).stat().st_size <= 4000 for name in files)
    numbers = [int(n) for name in reversed(files)
               for n in re.findall(r"autoprov line (\d+)", (tmp_path / name).read_text())]
    # The newest lines, in order, none lost between the files kept.
    assert numbers == list(range(numbers[0], 300))


def test_a_stack_service_log_rotates_at_the_configured_size(tmp_path: Path) -> None:
    script = ("for n in range(1, 40001): print('{ \"idx\": 0, \"pid\": 1, \"level\": \"INFO\", "
              "\"module\": \"core\", \"file\": \"core/x.c\", \"line\": 1, \"function\": \"f\", "
              "\"message\": \"autoprov %d\" }' % n)")
    proxy = stack.Service("kamailio", [sys.executable, "-c", script], dict(os.environ),
                          lambda: None, timestamp_log=True, log_rotation=(1024 * 1024, 1))
    log = tmp_path / "kamailio.log"

    stack.spawn(proxy, log)
    assert proxy.process is not None
    proxy.process.wait()
    stack.stop(proxy)

    assert log.stat().st_size <= 1024 * 1024
    assert (tmp_path / "kamailio.log.1").stat().st_size > 512 * 1024
    assert not (tmp_path / "kamailio.log.2").exists()
    assert "autoprov 40000" in log.read_text()
