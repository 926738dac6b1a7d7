"""Log lines from many request threads, written by one thread in batches.

Every request logs a line (fail2ban reads them), so the request path must not format a
timestamp, take the handler's lock or make a write() system call per line: at thousands of
fetches a second that was a third of the service's CPU. A request appends its record to a deque
(atomic, no lock); the writer thread wakes every FLUSH_S, formats what gathered and writes it
with one write(). Lines stay whole and in order per process (several worker processes share
stderr; one write() of whole lines never splits a line up to PIPE_BUF). Warnings and errors are
written at once, as is everything at shutdown.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import time
from typing import TextIO

from provisioning_wsgi import timestamps

FLUSH_S = 0.1
FORMAT = "%(asctime)s autoprov-provisioning[%(process)d] %(levelname)s %(message)s"


class BatchedHandler(logging.Handler):
    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stderr
        self.setFormatter(logging.Formatter(FORMAT))
        # LogRecords, or (time, message) of access lines at INFO (see `access`).
        self._pending: collections.deque[logging.LogRecord | tuple[float, str]] = \
            collections.deque()
        self._prefix = timestamps.SecondPrefix(time.localtime)
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._write_lock = threading.Lock()
        self._thread = threading.Thread(target=self._write_forever, name="log-writer",
                                        daemon=True)
        self._thread.start()

    def handle(self, record: logging.LogRecord) -> bool:
        # No lock and no formatting here; see the module's docstring.
        if not self.filter(record):
            return False
        self._queue(record, urgent=record.levelno >= logging.WARNING)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)

    def access(self, message: str) -> None:
        """An INFO line from the request path, without a LogRecord: only a timestamp is taken
        now, the line is formatted by the writer thread."""
        self._queue((time.time(), message), urgent=False)

    def _queue(self, item: logging.LogRecord | tuple[float, str], urgent: bool) -> None:
        self._pending.append(item)
        if self._stopped.is_set():  # no writer thread any more: write it now
            self.flush()
        elif urgent:
            self._wake.set()

    def _format_access(self, at: float, message: str, pid: int) -> str:
        # The same shape as FORMAT's: "2026-11-26 14:29:01,123 autoprov-provisioning[PID] INFO"
        second = int(at)
        return (f"{self._prefix(second)},{int((at - second) * 1000):03d} "
                f"autoprov-provisioning[{pid}] INFO {message}\n")

    def flush(self) -> None:
        with self._write_lock:
            lines = []
            pid = os.getpid()  # a system call: once a batch, not once a line
            while self._pending:
                item = self._pending.popleft()
                if isinstance(item, tuple):
                    lines.append(self._format_access(*item, pid))
                    continue
                try:
                    lines.append(self.format(item) + "\n")
                except Exception:  # a bad log call must not stop the writer
                    self.handleError(item)
            if not lines:
                return
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except (OSError, ValueError):
                pass  # stderr gone: nothing to tell it to

    def close(self) -> None:
        self._stopped.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self.flush()
        super().close()

    def _write_forever(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(FLUSH_S)
            self._wake.clear()
            self.flush()


_installed: BatchedHandler | None = None


def install(level: int = logging.INFO) -> BatchedHandler:
    """Make this process's root logger write through a BatchedHandler (after a fork, too)."""
    global _installed
    handler = _installed = BatchedHandler()
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def access(logger: logging.Logger, message: str) -> None:
    """An INFO line per request: straight to the batch when this process installed one."""
    if _installed is not None:
        _installed.access(message)
    else:
        logger.info("%s", message)
