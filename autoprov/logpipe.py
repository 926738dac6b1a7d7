"""A service's log file: every line it writes, with the local date and time in front.

`python -m autoprov.logpipe [--kamailio | --as-is] [--max-bytes N --keep K] FILE` (FILE `-`:
stdout; --as-is: a service that dates its own lines, written unchanged, rotated).
Kamailio's own lines (-E) carry no date, and fail2ban needs one. Wherever the stack sends
Kamailio's output to a file (`autoprov up`, the tests), it runs this between the two, in
Kamailio's process group:

- it exits at the end of its input (Kamailio and all its children gone), and ignores SIGTERM and
  SIGINT until then, so stopping the group does not lose Kamailio's last lines (the stack starts
  it with them blocked, for the moment before it ignores them);
- a line longer than MAX_LINE bytes is cut there and marked, and the rest of it dropped: written
  as a line of its own it would start with text a SIP client chose, and get a timestamp;
- SIGHUP reopens the file (logrotate's postrotate; Kamailio ignores SIGHUP);
- with --max-bytes, the file is rotated when it reaches that size (FILE.1 ... FILE.K kept).

With --kamailio the input is Kamailio's structured log (kamailio.cfg: log_engine_type "json"),
one JSON object per record, where every byte a SIP client chose is escaped inside a string. Each
record becomes the classic one-line shape fail2ban's filters anchor on, `IDX(PID) LEVEL: PREFIX
<module> [file:line]: function(): message`, with whatever is not printable escaped again, so no
client byte can start a line; a line that is not such a record (a crash report, say) is written
escaped after a fixed `kamailio output:` that no filter matches. Kamailio logs a malformed SIP
message in several lines, about 1 KB: a flood of them is rate limited per origin (file of the
source), with one line per second saying how many were suppressed. autoprov's own lines
(fail2ban's) are never suppressed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import sys
import time
from dataclasses import dataclass, field
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

    def stamp(self, now: float) -> bytes:
        second = int(now)
        return f"{self._prefix(second)},{int((now - second) * 1000):03d} ".encode()

    def feed(self, data: bytes, now: float) -> bytes:
        """The whole lines `data` completes, timestamped; an empty `data` means end of input."""
        stamp = self.stamp(now)
        return b"".join(stamp + line + b"\n" for line in self.lines(data))

    def lines(self, data: bytes) -> list[bytes]:
        """The whole lines `data` completes, without their line breaks; an empty `data` means
        end of input (a last line without its newline)."""
        out: list[bytes] = []
        if not data:
            if self._pending:
                out.append(bytes(self._pending))
            self._pending.clear()
            return out
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            ended = end >= 0
            piece = data[start:end] if ended else data[start:]
            self._add(piece, ended, out)
            start = end + 1 if ended else len(data)
        return out

    def _add(self, piece: bytes, ended: bool, out: list[bytes]) -> None:
        if not self._dropping:
            room = MAX_LINE - len(self._pending)
            if len(piece) > room:
                out.append(bytes(self._pending) + piece[:room] + TRUNCATED)
                self._pending.clear()
                self._dropping = True
            else:
                self._pending += piece
                if ended:
                    out.append(bytes(self._pending))
                    self._pending.clear()
        if ended:
            self._dropping = False


MAX_MESSAGE = 512  # characters of a Kamailio message kept (a malformed request's dump is ~1 KB)
BURST = 20  # lines of one origin written at once before the rate limit applies
PER_SECOND = 10.0  # lines of one origin per second after that
OUR_OWN = "autoprov "  # messages of autoprov's KEMI code: fail2ban's lines, never suppressed
RAW_PREFIX = "kamailio output: "  # three words: fail2ban's optional journal prefix takes two
# Kamailio's JSON record (core/dprint.c KSR_SLOG_STDERR_JSON_FMT). Only the log prefix is not
# escaped by Kamailio: when it broke the JSON, the fields are taken by position instead.
_RECORD = re.compile(
    r'^\{ "idx": (?P<idx>-?\d+), "pid": (?P<pid>\d+), "level": "(?P<level>\w+)", '
    r'"module": "(?P<module>[^"]*)", "file": "(?P<file>[^"]*)", "line": (?P<line>\d+), '
    r'"function": "(?P<function>[^"]*)"(?:, "logprefix": "(?P<logprefix>.*?)")?, '
    r'"message": "(?P<message>(?:[^"\\]|\\.)*)" \}$')


def escape(text: str) -> str:
    """One line of printable text: anything else as \\xNN / \\uNNNN."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else
                   (f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}") for c in text)


def _unescape_json(value: str) -> str:
    try:
        return str(json.loads(f'"{value}"'))
    except ValueError:
        return value


@dataclass
class Bucket:
    tokens: float = BURST
    at: float = 0.0
    suppressed: int = 0
    since: float = 0.0


@dataclass
class KamailioLines:
    """Kamailio's JSON records to one-line text, rate limited per origin."""

    buckets: dict[str, Bucket] = field(default_factory=dict)

    def line(self, raw: bytes, now: float) -> list[str]:
        """The lines (without date) that `raw`, one input line, becomes: none when suppressed,
        two when a count of suppressed lines of the same origin is due first."""
        text = raw.decode("utf-8", "surrogateescape").rstrip("\r")
        record = _record(text)
        if record is None:
            return [RAW_PREFIX + escape(text[:MAX_MESSAGE])] if text.strip() else []
        message = str(record.get("message", ""))
        prefix = escape(str(record.get("logprefix", "")))
        module = escape(str(record.get("module", "")))
        # Kamailio's classic shape: "%2d(%d) LEVEL: PREFIX<core> [file:line]: function(): ",
        # a module's name without the angle brackets.
        out = (f"{escape(str(record.get('idx', ''))):>2}({escape(str(record.get('pid', '')))}) "
               f"{escape(str(record.get('level', '')))}: {prefix}"
               f"{'<core>' if module == 'core' else module} "
               f"[{escape(str(record.get('file', '')))}:{escape(str(record.get('line', '')))}]: "
               f"{escape(str(record.get('function', '')))}(): ")
        cut = message[:MAX_MESSAGE]
        out += escape(cut) + (" [cut]" if len(message) > MAX_MESSAGE else "")
        if message.startswith(OUR_OWN):
            return [out]
        return self._limited(_origin(record), out, now)

    def _limited(self, origin: str, out: str, now: float) -> list[str]:
        bucket = self.buckets.setdefault(origin, Bucket(at=now))
        bucket.tokens = min(BURST, bucket.tokens + (now - bucket.at) * PER_SECOND)
        bucket.at = now
        lines = []
        if bucket.suppressed and now - bucket.since >= 1.0:
            lines.append(self._summary(origin, bucket, now))
        if bucket.tokens < 1:
            if not bucket.suppressed:
                bucket.since = now
            bucket.suppressed += 1
            return lines
        bucket.tokens -= 1
        lines.append(out)
        return lines

    def due(self, now: float) -> list[str]:
        """Counts of suppressed lines whose second is over (called when input is quiet too)."""
        return [self._summary(origin, bucket, now) for origin, bucket in self.buckets.items()
                if bucket.suppressed and now - bucket.since >= 1.0]

    @staticmethod
    def _summary(origin: str, bucket: Bucket, now: float) -> str:
        line = (f" 0(0) WARNING: <autoprov> [autoprov/logpipe.py:0]: rate_limit(): suppressed "
                f"{bucket.suppressed} lines from {origin} in {now - bucket.since:.1f}s")
        bucket.suppressed = 0
        return line


def _record(text: str) -> dict[str, object] | None:
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        found = _RECORD.match(text)
        if found is None:
            return None
        value = {k: v for k, v in found.groupdict().items() if v is not None}
        value["message"] = _unescape_json(str(value.get("message", "")))
        value["logprefix"] = str(value.get("logprefix", ""))
    if not isinstance(value, dict) or "message" not in value or "level" not in value:
        return None
    message = value["message"]
    if isinstance(message, dict):  # a message Kamailio already wrote as JSON
        value["message"] = json.dumps(message)
    return value


def _origin(record: dict[str, object]) -> str:
    """What a flood repeats: the source file, its parser files counted as one."""
    file = str(record.get("file", ""))
    return "core/parser/" if file.startswith("core/parser/") else file


class Output:
    """The file written to, reopened on SIGHUP and rotated by size."""

    def __init__(self, path: str, max_bytes: int = 0, keep: int = 0) -> None:
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        self.fd = 1 if path == "-" else _open(path)
        self.size = os.fstat(self.fd).st_size if path != "-" else 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self.max_bytes or self.path == "-" or self.size + len(data) <= self.max_bytes:
            _write(self.fd, data)
            self.size += len(data)
            return
        chunk = b""  # what still fits, written at once; the file rotates between lines
        for line in data.splitlines(keepends=True):
            if self.size + len(chunk) + len(line) > self.max_bytes and self.size + len(chunk):
                _write(self.fd, chunk)
                self.size += len(chunk)
                chunk = b""
                self._rotate()
            chunk += line
        _write(self.fd, chunk)
        self.size += len(chunk)

    def reopen(self) -> None:
        if self.path == "-":
            return
        try:
            fresh = _open(self.path)
        except OSError:
            return  # keep writing where we did rather than stop reading
        os.close(self.fd)
        self.fd = fresh
        self.size = os.fstat(fresh).st_size

    def _rotate(self) -> None:
        try:
            for n in range(self.keep - 1, 0, -1):
                if os.path.exists(f"{self.path}.{n}"):
                    os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
            if self.keep > 0:
                os.replace(self.path, f"{self.path}.1")
            else:
                os.truncate(self.path, 0)
        except OSError:
            return
        self.reopen()


def _open(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)


def _write(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass  # disk full, say: drop the lines, but keep reading or Kamailio would block


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m autoprov.logpipe")
    parser.add_argument("--kamailio", action="store_true",
                        help="the input is Kamailio's JSON log: one safe text line per record")
    parser.add_argument("--as-is", action="store_true",
                        help="lines that carry their own date: written unchanged (rotation only)")
    parser.add_argument("--max-bytes", type=int, default=0, help="rotate at this size")
    parser.add_argument("--keep", type=int, default=5, help="rotated files kept")
    parser.add_argument("file", help="the log file, - for stdout")
    return parser.parse_args(argv[1:])


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    reopen = False

    def on_hup(signum: int, frame: FrameType | None) -> None:
        nonlocal reopen
        reopen = True

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, on_hup)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    out = Output(args.file, args.max_bytes, args.keep)
    stamper = Stamper()
    kamailio = KamailioLines() if args.kamailio else None
    while True:
        if kamailio is not None and not select.select([0], [], [], 1.0)[0]:
            now = time.time()
            out.write(_stamped(stamper, kamailio.due(now), now))
            continue
        data = os.read(0, READ_SIZE)  # retried after a signal handler (PEP 475)
        if reopen:
            reopen = False
            out.reopen()
        now = time.time()
        if kamailio is not None:
            converted: list[str] = []
            for line in stamper.lines(data):
                converted += kamailio.line(line, now)
            out.write(_stamped(stamper, converted, now))
        elif args.as_is:
            out.write(data)
        else:
            out.write(stamper.feed(data, now))
        if not data:
            return 0


def _stamped(stamper: Stamper, lines: list[str], now: float) -> bytes:
    stamp = stamper.stamp(now)
    return b"".join(stamp + line.encode("utf-8", "surrogateescape") + b"\n" for line in lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
