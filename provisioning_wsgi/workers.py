"""Several processes serving the same listening sockets.

One CPython process runs Python on one core at a time (the GIL), and a fleet rebooting at once
keeps the service busy. So the sockets the web front hands requests to are bound once, in the
parent, and `http_workers` forked processes accept from the same sockets: the kernel hands a
new connection to whichever process asks first.

The parent only supervises: it starts no thread and opens no database connection before
forking. A worker that dies is started again (no more often than RESTART_DELAY_S); SIGTERM or
SIGINT stops every worker, each finishing its requests and writing its queued fetch records.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("autoprov.provisioning")

RESTART_DELAY_S = 1.0
STOP_TIMEOUT_S = 20.0


def count(configured: int) -> int:
    """0 means one worker per CPU this process may run on."""
    if configured > 0:
        return configured
    return max(1, len(os.sched_getaffinity(0)))


def supervise(workers: int, work: Callable[[int], int]) -> int:
    """Fork `workers` processes running work(index), until SIGTERM or SIGINT; returns 0 once
    they have all stopped, 1 if a worker had to be killed."""
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    running: dict[int, int] = {}  # pid: index
    started: dict[int, float] = {}  # index: when it last started
    for index in range(workers):
        running[_fork(index, work)] = index
        started[index] = time.monotonic()
    log.info("serving from %d worker processes: %s", workers,
             " ".join(str(pid) for pid in running))
    while not stopping:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.2)
            continue
        if pid not in running:
            continue
        index = running.pop(pid)
        log.error("worker %d (pid %d) exited (%s); starting it again", index, pid,
                  _describe(status))
        time.sleep(max(0.0, started[index] + RESTART_DELAY_S - time.monotonic()))
        if stopping:
            break
        running[_fork(index, work)] = index
        started[index] = time.monotonic()
    return _stop_all(running)


def _fork(index: int, work: Callable[[int], int]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        code = work(index)
    except BaseException:  # a worker never returns into the parent's loop
        log.exception("worker %d failed", index)
    finally:
        logging.shutdown()
        os._exit(code)
    return 0  # not reached


def _stop_all(running: dict[int, int]) -> int:
    for pid in running:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    killed = False
    while running:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            running.pop(pid, None)
            continue
        if time.monotonic() > deadline:
            for left in running:
                log.error("worker pid %d did not stop in %.0f s; killed", left, STOP_TIMEOUT_S)
                _signal(left, signal.SIGKILL)
            killed = True
            deadline = float("inf")
        time.sleep(0.05)
    return 1 if killed else 0


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def listening_unix_socket(path: Path, backlog: int) -> socket.socket:
    """A bound, listening, non-blocking unix socket at path (a stale one there is replaced).

    Anyone who can enter its folder may connect (front.prepare_socket_dir keeps that to the
    front's workers): nginx's workers run as another user than this service when root."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        path.chmod(0o666)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    # Several processes accept from it: the one that loses a race must get EAGAIN at once,
    # not wait in accept() while its own connections need it.
    sock.setblocking(False)
    return sock
