"""Every device's files rendered to disk, for the web front to serve itself (issue 19).

A phone's fetch of its own files is the bulk of the web traffic (a mass reboot is one bootstrap
file and one full config per phone). The front (autoprov/front.py, nginx) answers those from
the files written here, as fast as it serves any static file; a request it finds no file for
(a common file, an unknown MAC, another MAC's file, a method other than GET and HEAD) goes on to
the app, which answers as it always did. Layout under root(settings):

  store/bootstrap/<file>.<ext>        the plain port's device files (never a credential)
  store/tls/<mac>/<file>.<ext>        the TLS port's, one folder per MAC (and <MAC> -> <mac>)
  live -> store                       present only while what is in store is current

<ext> names the content type (CONTENT_EXTENSIONS); each file's mtime is its Rendered.stamp, so
the front's ETag ("MTIME-SIZE") is the config version the app would give the same bytes.

On the TLS port the front looks in the folder of the MAC its verified client certificate's
subject names (front.CERT_MAC), so a certificate can only ever be served the files published
for its own MAC; any other request, or a subject the front cannot read a MAC from, reaches the
app and its full check.

Current, and how it stays so. The publisher LISTENs on autoprov_config (sql/006) before it
renders the whole fleet, so no change is missed; a change first removes the device's files
(requests then reach the app, which reads the database), then publishes them anew. A template
or firmware change, a TRUNCATE ('*'), a lost database connection and the start of the process
all remove `live` first: while the database is away every fetch reaches the app and is answered
503, as before. Files are written whole (a new file renamed over the old one), and readable
only by this service and the front's workers (the folders are the front's socket_dir's).

The manifest says which device, config version and snapshot each published file is: the fetch
log (provisioning_wsgi/fetchlog.py) records the front's fetches of them from it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from autoprov import front
from autoprov.config import Settings
from provisioning_wsgi import store, vendors
from provisioning_wsgi.cache import CHANNEL, names_everything
from provisioning_wsgi.render import Device, Line, Rendered, Renderer, RenderError

log = logging.getLogger("autoprov.provisioning")

STORE, LIVE = "store", front.LIVE
PORTS = ("bootstrap", "tls")
RECONNECT_S = 1.0
# Devices read per statement when many changed at once (a bulk insert, the first publish).
BATCH = 2000
# How long a replaced version's manifest entry is kept, for fetches of it still in the log.
KEEP_REPLACED_S = 600.0


def _extensions() -> dict[str, str]:
    types = sorted({v.content_type.split(";")[0].strip() for v in vendors.VENDORS.values()})
    return {mime: f"p{index}" for index, mime in enumerate(types)}


# Content type (without its charset: every vendor's is UTF-8) -> file extension on disk.
CONTENT_EXTENSIONS = _extensions()


def root(settings: Settings) -> Path:
    return front.socket_dir(settings) / "published"


@dataclass(frozen=True)
class Entry:
    """One published file: whose, which bytes, read in which snapshot."""

    device_id: int
    mac: str
    version: str
    snapshot: str


Key = tuple[str, str]  # port, file (a device file's name holds its MAC)


class Manifest:
    """What is published, and what was lately: shared with the fetch log reader's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: dict[Key, Entry] = {}
        self._replaced: dict[tuple[Key, str], tuple[Entry, float]] = {}

    def put(self, key: Key, entry: Entry) -> None:
        with self._lock:
            old = self._current.get(key)
            self._current[key] = entry
            if old is not None and old.version != entry.version:
                self._replaced[(key, old.version)] = (old, time.monotonic() + KEEP_REPLACED_S)

    def drop(self, key: Key) -> None:
        with self._lock:
            old = self._current.pop(key, None)
            if old is not None:
                self._replaced[(key, old.version)] = (old, time.monotonic() + KEEP_REPLACED_S)

    def lookup(self, port: str, file: str, version: str) -> Entry | None:
        """The entry of the file the front served in this version."""
        key = (port, file)
        entry = self._current.get(key)
        if entry is not None and entry.version == version:
            return entry
        with self._lock:
            kept = self._replaced.get((key, version))
        return kept[0] if kept else None

    def keys(self) -> set[Key]:
        with self._lock:
            return set(self._current)

    def sweep(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._replaced = {k: v for k, v in self._replaced.items() if v[1] > now}


_ALL_IDS = "SELECT id FROM autoprov.device ORDER BY id"
_SOME = store.DEVICES_WITH_LINES.format(where="d.id = ANY(%s) OR d.mac = ANY(%s)")

DeviceRows = list[tuple[Device, list[Line], str]]


def read_devices(conn: store.Conn, ids: Iterable[int], macs: Iterable[str]) -> DeviceRows:
    """The devices with these ids or MACs and their lines, from one statement's snapshot."""
    return store.devices_with_lines(conn.execute(_SOME, (list(ids), list(macs))).fetchall())


class Publisher:
    def __init__(self, settings: Settings, renderer: Renderer, manifest: Manifest) -> None:
        self.settings = settings
        self.renderer = renderer
        self.manifest = manifest
        self.root = root(settings)
        self.store_dir = self.root / STORE
        # device id -> its published files (port, file) and MAC
        self._files: dict[int, dict[Key, Path]] = {}
        self._mac_of: dict[int, str] = {}
        self._device_of_mac: dict[str, int] = {}
        self._everything = threading.Event()  # templates changed: publish all anew
        renderer.on_templates_changed(self._everything.set)
        self.live_once = threading.Event()  # set once the fleet was first published

    # -- the front's view: live or not --------------------------------------------------------

    def withdraw(self) -> None:
        """Every request goes to the app from now on."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.root / LIVE)

    def _go_live(self) -> None:
        tmp = self.root / f".{LIVE}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(STORE, tmp)
        os.replace(tmp, self.root / LIVE)
        self.live_once.set()

    def prepare(self) -> None:
        """The folders, readable by the front's workers (their group, inherited: setgid)."""
        self.withdraw()
        for path in (self.root, self.store_dir, self.store_dir / "bootstrap",
                     self.store_dir / "tls"):
            path.mkdir(exist_ok=True)
            _share_with_front(path)

    # -- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self.prepare()
        while not stop.is_set():
            connected = False
            try:
                with store.listening(self.settings, CHANNEL, "autoprov-publisher") as conn:
                    connected = True
                    self._publish_all(conn)
                    self._go_live()
                    log.info("published the files of %d device(s) for the web front",
                             len(self._files))
                    self._follow(conn, stop)
            except (psycopg.Error, OSError) as exc:
                if connected:
                    log.warning("published files withdrawn: lost the database: %s",
                                str(exc).strip())
            finally:
                self.withdraw()
            stop.wait(RECONNECT_S)

    def _follow(self, conn: psycopg.Connection[Any], stop: threading.Event) -> None:
        """Apply each change as its notification arrives, until stopped or disconnected."""
        poller = select.epoll()
        poller.register(conn.fileno(), select.EPOLLIN)
        try:
            while not stop.is_set():
                poller.poll(0.5)
                payloads = [n.payload for n in conn.notifies(timeout=0)]
                self.renderer.check_templates()
                if self._everything.is_set() or any(map(names_everything, payloads)):
                    self._everything.clear()
                    self.withdraw()
                    self._publish_all(conn)
                    self._go_live()
                    log.info("published files renewed: %d device(s)", len(self._files))
                elif payloads:
                    self._apply(conn, payloads)
                self.manifest.sweep()
        finally:
            poller.close()

    def _apply(self, conn: psycopg.Connection[Any], payloads: list[str]) -> None:
        ids: set[int] = set()
        macs: set[str] = set()
        for payload in payloads:
            words = payload.split()
            if not words:
                continue
            ids.add(int(words[0]))
            macs.update(words[1:])
        # First away, so the app answers (from the database) until the new files are there.
        for device_id in ids | {self._device_of_mac[m] for m in macs if m in self._device_of_mac}:
            self._unpublish(device_id)
        for chunk in _chunks(sorted(ids), BATCH):
            self._publish(read_devices(conn, chunk, ()))
        if macs:
            self._publish(read_devices(conn, (), sorted(macs)))

    def _publish_all(self, conn: psycopg.Connection[Any]) -> None:
        ids = [row[0] for row in conn.execute(_ALL_IDS)]
        for device_id in list(self._files):
            self._unpublish(device_id)
        for chunk in _chunks(ids, BATCH):
            self._publish(read_devices(conn, chunk, ()))
        self._remove_strays()

    # -- files --------------------------------------------------------------------------------

    def _publish(self, devices: DeviceRows) -> None:
        for device, lines, snapshot in devices:
            if device.id in self._files:
                self._unpublish(device.id)
            vendor = vendors.VENDORS.get(device.vendor)
            if vendor is None:
                continue
            published: dict[Key, Path] = {}
            for name in vendor.files_for(device.model, device.mac):
                requested = vendors.parse_as(vendor, name)
                if requested is None or requested.mac != device.mac:
                    continue  # a common file: the app renders those without the database
                for port in PORTS:
                    try:
                        rendered = (self.renderer.config(requested, device, lines)
                                    if port == "tls" else
                                    self.renderer.bootstrap(requested, device))
                    except RenderError as exc:
                        log.error("not published (the app answers it): %s", exc)
                        continue
                    path = self._path(port, device.mac, name, rendered)
                    self._write(path, rendered)
                    self.manifest.put((port, name),
                                      Entry(device.id, device.mac, rendered.version, snapshot))
                    published[(port, name)] = path
            self._files[device.id] = published
            self._mac_of[device.id] = device.mac
            self._device_of_mac[device.mac] = device.id

    def _unpublish(self, device_id: int) -> None:
        mac = self._mac_of.pop(device_id, None)
        for key, path in self._files.pop(device_id, {}).items():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self.manifest.drop(key)
        if mac is not None and self._device_of_mac.get(mac) == device_id:
            del self._device_of_mac[mac]

    def _dir(self, port: str, mac: str) -> Path:
        return self.store_dir / port / mac if port == "tls" else self.store_dir / port

    def _path(self, port: str, mac: str, name: str, rendered: Rendered) -> Path:
        folder = self._dir(port, mac)
        if port == "tls" and not folder.is_dir():
            folder.mkdir()
            _share_with_front(folder)
            upper = self.store_dir / port / mac.upper()
            with contextlib.suppress(FileExistsError):
                os.symlink(mac, upper)  # Cisco's certificates spell it upper-case
        mime = rendered.content_type.split(";")[0].strip()
        return folder / f"{name}.{CONTENT_EXTENSIONS[mime]}"

    @staticmethod
    def _write(path: Path, rendered: Rendered) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, rendered.body)
            os.utime(fd, (rendered.stamp, rendered.stamp))
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def _remove_strays(self) -> None:
        """Files no device has any more (changed or deleted while this process was away)."""
        wanted = self.manifest.keys()

        def sweep(folder: str, port: str) -> None:
            for entry in os.scandir(folder):
                if (port, entry.name.rpartition(".")[0]) not in wanted:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)

        sweep(str(self.store_dir / "bootstrap"), "bootstrap")
        for entry in os.scandir(self.store_dir / "tls"):
            if entry.is_symlink():
                if entry.name.lower() not in self._device_of_mac:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
            elif entry.name not in self._device_of_mac:
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                sweep(entry.path, "tls")


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _share_with_front(path: Path) -> None:
    """As root: group of the front's workers, who may read, and their group for what is made in
    it (setgid); otherwise this user's alone (the front's workers run as this user)."""
    if os.geteuid() == 0:
        os.chown(path, 0, front.worker_gid())
        path.chmod(0o2750)
    else:
        path.chmod(0o700)
