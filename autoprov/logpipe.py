"""Kamailio's log file: every line Kamailio writes to stderr, with the local date and time in front.

Kamailio's own lines (-E) carry no date, and fail2ban needs one. Wherever the stack sends
Kamailio's output to a file (`autoprov up`, the tests), it runs `python -m autoprov.logpipe FILE`
between the two, in Kamailio's process group:

- it exits at the end of its input (Kamailio and all its children gone), and ignores SIGTERM and
  SIGINT until then, so stopping the group does not lose Kamailio's last lines (the stack starts
  it with them blocked, for the moment before it ignores them);
- a line longer than MAX_LINE bytes is cut there and marked, and the rest of it dropped: written
  as a line of its own it would start with text a SIP client chose, and get a timestamp;
- SIGHUP reopens the file (logrotate's postrotate; Kamailio ignores SIGHUP).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType

from provisioning_wsgi import timestamps

MAX_LINE = 8192
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
TRUNCATED = b" [line truncated]"
READ_SIZE = 65536


class Stamper:
    """Splits what was read into lines and puts the time it was read in front of each."""

    def __init__(self) -> None:
        # The same shape as the provisioning log's: "2026-11-26 14:29:01,123 ".
        self._prefix = timestamps.SecondPrefix(time.localtime)
        self._pending = bytearray()  # the start of a line not ended yet, at most MAX_LINE
        self._dropping = False  # in the rest of a line already written cut

    def feed(self, data: bytes, now: float) -> bytes:
        """The whole lines `data` completes, timestamped; an empty `data` means end of input."""
        second = int(now)
        stamp = f"{self._prefix(second)},{int((now - second) * 1000):03d} ".encode()
        out: list[bytes] = []
        if not data:  # a last line without its newline
            if self._pending:
                out.append(stamp + bytes(self._pending) + b"\n")
            self._pending.clear()
            return b"".join(out)
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            ended = end >= 0
            piece = data[start:end] if ended else data[start:]
            self._add(piece, ended, stamp, out)
            start = end + 1 if ended else len(data)
        return b"".join(out)

    def _add(self, piece: bytes, ended: bool, stamp: bytes, out: list[bytes]) -> None:
        if not self._dropping:
            room = MAX_LINE - len(self._pending)
            if len(piece) > room:
                out.append(stamp + bytes(self._pending) + piece[:room] + TRUNCATED + b"\n")
                self._pending.clear()
                self._dropping = True
            else:
                self._pending += piece
                if ended:
                    out.append(stamp + bytes(self._pending) + b"\n")
                    self._pending.clear()
        if ended:
            self._dropping = False


def _open(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)


def _write(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass  # disk full, say: drop the lines, but keep reading or Kamailio would block


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m autoprov.logpipe FILE  (Kamailio's output on stdin)",
              file=sys.stderr)
        return 2
    path = argv[1]
    reopen = False

    def on_hup(signum: int, frame: FrameType | None) -> None:
        nonlocal reopen
        reopen = True

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, on_hup)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    out = _open(path)
    stamper = Stamper()
    while True:
        data = os.read(0, READ_SIZE)  # retried after a signal handler (PEP 475)
        if reopen:
            reopen = False
            try:
                fresh = _open(path)
            except OSError:
                pass  # keep writing where we did rather than stop reading
            else:
                os.close(out)
                out = fresh
        _write(out, stamper.feed(data, time.time()))
        if not data:
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
