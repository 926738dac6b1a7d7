"""The web front's log of the published files it served: each line recorded as a fetch.

The front (autoprov/front.py) writes one line per request it answers from a published file
(provisioning_wsgi/publish.py) to front.fetch_log_path(settings), in front.config's
log_format. This reader follows that file and does for each line what the app does for a fetch
it answers: the access line in the service's log (same shape: fail2ban and operators read one
log), the fetch record with the config version and snapshot of the bytes served (from the
publisher's manifest, by the ETag the front sent), and the request counters of /metrics.

Nothing is lost when this process stops or dies: how far the file was read is kept in
offset_path(settings) (written after each batch handed to the fetch writer), and the next reader
goes on from there. The file is rotated here past fetch_log_rotate_kb: renamed, nginx told to
reopen its logs (SIGUSR1), the old file read to its end, then removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import threading
import time
from pathlib import Path

from autoprov import front
from autoprov.config import Settings
from provisioning_wsgi import logsink, metrics, vendors
from provisioning_wsgi.cache import FetchWriter
from provisioning_wsgi.publish import Manifest

log = logging.getLogger("autoprov.provisioning")

# The lines are front.config's log_format autoprov_<port>: the port's name, then the fields
# below; the user agent last, as it may hold spaces. nginx escapes '"', '\\' and bytes outside
# printable ASCII as \\xHH, so a line is a line.
POLL_S = 0.01
# After nginx was told to reopen its logs, its workers may still write to the old file for a
# moment (a buffer being flushed).
REOPEN_GRACE_S = 2.0
MAX_LINE = 16 * 1024

_ESCAPED = re.compile(r"\\x([0-9A-Fa-f]{2})")


def offset_path(settings: Settings) -> Path:
    return front.socket_dir(settings) / "fetches.offset"


def _unescape(text: str) -> str:
    """nginx's \\xHH back to the byte, as latin-1: what WSGI gives the app for a header."""
    if "\\x" not in text:
        return text
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), text)


class FetchLog:
    def __init__(self, settings: Settings, manifest: Manifest, writer: FetchWriter,
                 meters: dict[str, metrics.Meter]) -> None:
        self.path = front.fetch_log_path(settings)
        self.offset_file = offset_path(settings)
        self.pid_file = front.conf_path(settings).with_name("nginx.pid")
        self.rotate_bytes = max(1, settings.fetch_log_rotate_kb) * 1024
        self.manifest = manifest
        self.writer = writer
        self.meters = meters
        self.unknown_version = 0  # lines whose file and version were not in the manifest

    # -- where we are -------------------------------------------------------------------------

    def _saved(self) -> tuple[int, int]:
        try:
            inode, offset = self.offset_file.read_text().split()
            return int(inode), int(offset)
        except (OSError, ValueError):
            return 0, 0

    def _save(self, inode: int, offset: int) -> None:
        tmp = self.offset_file.with_name(self.offset_file.name + ".tmp")
        tmp.write_text(f"{inode} {offset}\n")
        os.replace(tmp, self.offset_file)

    # -- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self.path.touch(exist_ok=True)  # nginx appends to it; we may start first
        old = self._old()
        if old.exists():  # a rotation this process's predecessor did not finish
            self._read_to_end(old, stop, final=True)
            old.unlink(missing_ok=True)
        while not stop.is_set():
            self._read_to_end(self.path, stop, final=False)

    def _old(self) -> Path:
        return self.path.with_name(self.path.name + ".old")

    def _read_to_end(self, path: Path, stop: threading.Event, final: bool) -> None:
        """Follow `path` until it is rotated (or, final: read what it holds), then return."""
        try:
            handle = open(path, "rb")  # noqa: SIM115 - kept open across the loop
        except FileNotFoundError:
            stop.wait(POLL_S)
            return
        with handle:
            inode = os.fstat(handle.fileno()).st_ino
            saved_inode, offset = self._saved()
            if saved_inode == inode and offset <= os.fstat(handle.fileno()).st_size:
                handle.seek(offset)
            else:
                offset = 0
                self._save(inode, 0)
            rest = b""
            moved_at: float | None = None  # renamed (rotated): read on until nginx let go
            while True:
                chunk = handle.read(1 << 20)
                if chunk:
                    data = rest + chunk
                    cut = data.rfind(b"\n") + 1
                    rest = data[cut:]
                    if len(rest) > MAX_LINE:  # not a line of ours: skip it
                        cut, rest = len(data), b""
                    self._lines(data[:cut])
                    offset += len(chunk)
                    self._save(inode, offset - len(rest))
                    continue
                if final or stop.is_set():
                    return
                if moved_at is not None:
                    if time.monotonic() - moved_at > REOPEN_GRACE_S:
                        if self._same_file(self._old(), inode):
                            self._old().unlink()
                        return
                elif offset > self.rotate_bytes and self._rotate(path):
                    moved_at = time.monotonic()
                elif not self._same_file(path, inode):
                    moved_at = time.monotonic()  # moved by someone else: finish it
                stop.wait(POLL_S)

    @staticmethod
    def _same_file(path: Path, inode: int) -> bool:
        try:
            return path.stat().st_ino == inode
        except FileNotFoundError:
            return False

    def _rotate(self, path: Path) -> bool:
        """Rename the file and have nginx reopen its log; the open file is read on."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return False  # no front of ours to reopen its log: keep appending
        os.replace(path, self._old())
        path.touch()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGUSR1)
        log.info("fetch log rotated")
        return True

    # -- one batch of lines -------------------------------------------------------------------

    def _lines(self, data: bytes) -> None:
        for raw in data.decode("latin-1").splitlines():
            self._line(raw)

    def _line(self, line: str) -> None:
        parts = line.split(" ", 8)
        if len(parts) != 9:
            return
        port, at, method, status_text, etag, client, seconds, file, agent = parts
        try:
            status, when, took = int(status_text), float(at), float(seconds)
        except ValueError:
            return
        meter = self.meters.get(port)
        if meter is not None:
            meter.record(status, took)
        version = _unescape(etag).strip('"')
        entry = self.manifest.lookup(port, file, version) if version else None
        extra = f" device={entry.mac} version={version}" if entry is not None else ""
        loggable = file if vendors.SAFE_FILE.match(file) else "-"
        logsink.access(log, f"access client={client} port={port} method={method} "
                            f"file={loggable} status={status}{extra}")
        if method != "GET" or status not in (200, 206, 304):
            return
        if entry is None:
            self.unknown_version += 1
            log.warning("fetch log: %s %s version %s is not a published file of any device; "
                        "not recorded", port, loggable, version or "-")
            return
        ua = agent[1:-1] if len(agent) >= 2 and agent[0] == agent[-1] == '"' else agent
        ua = _unescape(ua)
        self.writer.record(entry.device_id, port, file, version, client,
                           None if ua in ("-", "") else ua, entry.snapshot, at=when)
