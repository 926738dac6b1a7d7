"""Rendered configs kept in memory, and fetch records written in the background.

ConfigCache: what `ProvisioningApp._render_device_file` answered for (port, mac, file), with the
snapshot it was read in. The database announces every change a config is rendered from with
NOTIFY autoprov_config (sql/006_config_cache.sql); one thread LISTENs and drops the entries of
the device named. Recording a fetch of a cached config stays exact: the entry keeps its
read_snapshot, and a change committed after that snapshot is not in it (nor visible in it) until
its NOTIFY drops the entry. A change is served from the first request after its NOTIFY arrives,
normally a millisecond or so after the commit.

Until the listener is connected (at start, or while the database is away) nothing is cached or
served from the cache, so an unreachable database still answers 503. An entry is stored only if
no invalidation arrived since its read began (the epoch), and while a notification is waiting
unread on the listener's socket the cache is bypassed. Templates: the renderer watches their
files (the listener thread asks it about once a second, as cache hits render nothing); any change
empties the cache.

FetchWriter: fetches are queued and written every FLUSH_INTERVAL_S by one COPY statement, each row
with its own read_snapshot and fetched_at (the time of the request). The trade-off: a fetch is
visible in autoprov.config_fetch (and moves a resync request to `fetched`) up to ~0.1 s after
the response, and if the service is killed hard (SIGKILL, crash) the last ~0.1 s of fetches are
not recorded. While the database is away rows are kept (up to MAX_PENDING) and written when it
is back. SIGTERM/SIGINT flush the queue before exiting.

On the plain port a GET repeated within REPEAT_WINDOW_S (same device, file and config version)
is not recorded again: that port is unauthenticated, and a row per GET would let anyone who knows
a MAC make the database write at line rate, rows that pruning keeps for 90 days. A phone never
fetches the same bootstrap file twice in seconds, the access log still has every GET, and no
bootstrap fetch settles anything. TLS fetches are always recorded: each one may settle a resync.
"""

from __future__ import annotations

import logging
import select
import threading
import time

import psycopg

from autoprov import config_fetch
from autoprov.config import Settings
from provisioning_wsgi import render, store, timestamps
from provisioning_wsgi.unknown import WRITE_EVERY_S as UNKNOWN_WRITE_S
from provisioning_wsgi.unknown import UnknownPhones

log = logging.getLogger("autoprov.provisioning")

CHANNEL = "autoprov_config"
MAX_ENTRIES = 100_000
RECONNECT_S = 1.0

Key = tuple[str, str, str]  # port, mac, file


def names_everything(payload: str) -> bool:
    """An autoprov_config payload that is about every device ('*', or one not understood)."""
    words = payload.split()
    return not words or not words[0].isdigit()


class ConfigCache:
    def __init__(self, settings: Settings, renderer: render.Renderer | None = None) -> None:
        self.settings = settings
        # Whose templates the cached configs are rendered from: asked by the listener thread.
        self._renderer = renderer
        if renderer is not None:
            renderer.on_templates_changed(self.flush)
        self._lock = threading.Lock()
        self._entries: dict[Key, tuple[int | None, object]] = {}
        self._by_device: dict[int, set[Key]] = {}
        self._by_mac: dict[str, set[Key]] = {}
        self._epoch = 0
        self._fd = -1  # the listener's socket while it is connected, else -1
        # Watches _fd: one cheap system call per cache hit (select.select builds lists).
        self._unread: select.epoll | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the request side --------------------------------------------------------------------

    def epoch(self) -> int:
        """Take before reading what is to be stored; `put` refuses it if anything changed."""
        return self._epoch

    def get(self, key: Key) -> object | None:
        if self._fd < 0:
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        unread = self._unread
        try:  # a notification waiting unread: it may be about this entry
            if unread is None or unread.poll(0):
                return None
        except (OSError, ValueError):  # closed as the listener lost its connection
            return None
        return entry[1]

    def put(self, key: Key, device_id: int | None, value: object, epoch: int) -> None:
        with self._lock:
            if self._fd < 0 or epoch != self._epoch:
                return
            if len(self._entries) >= MAX_ENTRIES:
                self._clear()
            self._entries[key] = (device_id, value)
            if device_id is not None:
                self._by_device.setdefault(device_id, set()).add(key)
            self._by_mac.setdefault(key[1], set()).add(key)

    # -- invalidation ------------------------------------------------------------------------

    def _clear(self) -> None:
        self._entries.clear()
        self._by_device.clear()
        self._by_mac.clear()

    def flush(self) -> None:
        with self._lock:
            self._epoch += 1
            self._clear()

    def invalidate(self, payload: str) -> None:
        words = payload.split()
        with self._lock:
            self._epoch += 1
            if names_everything(payload):
                self._clear()
                return
            keys = set(self._by_device.pop(int(words[0]), ()))
            for mac in words[1:]:
                keys |= self._by_mac.pop(mac, set())
            for key in keys:
                self._entries.pop(key, None)

    # -- the listener thread -----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._listen_forever, name="config-cache",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _disconnected(self) -> None:
        with self._lock:
            self._fd = -1
            if self._unread is not None:
                self._unread.close()
                self._unread = None
            self._epoch += 1
            self._clear()

    def _listen_forever(self) -> None:
        while not self._stop.is_set():
            connected = False
            try:
                with store.listening(self.settings, CHANNEL,
                                     "autoprov-provisioning-cache") as conn:
                    unread = select.epoll()
                    unread.register(conn.fileno(), select.EPOLLIN)
                    with self._lock:  # from here on, every change is heard: start afresh
                        self._epoch += 1
                        self._clear()
                        self._fd, self._unread = conn.fileno(), unread
                    connected = True
                    try:
                        while not self._stop.is_set():
                            for notify in conn.notifies(timeout=1.0):
                                self.invalidate(notify.payload)
                            if self._renderer is not None:
                                self._renderer.check_templates()
                    finally:
                        self._disconnected()  # before the socket closes: no hit meanwhile
            except (psycopg.Error, OSError) as exc:
                if connected:  # not once a second while it stays away
                    log.warning("config cache off: lost the database: %s", str(exc).strip())
            self._stop.wait(RECONNECT_S)


# -- fetch records -----------------------------------------------------------------------------

FLUSH_INTERVAL_S = 0.05
MAX_PENDING = 100_000
REPEAT_WINDOW_S = 5.0

# Rows arrive by COPY straight into the table: one statement a batch, values formatted in C by
# psycopg. A device deleted since its fetch fails the whole COPY (foreign key): then the batch
# goes again without that device's rows.
_COPY = ("COPY autoprov.config_fetch (device_id, port, file, config_version, client_addr,"
         " user_agent, read_snapshot, fetched_at) FROM STDIN")
_EXISTING = "SELECT id FROM autoprov.device WHERE id = ANY(%s)"

# As queued by a request: the client address and user agent still raw, the time a float (the
# writer thread checks and trims them and formats the time, off the request path).
Row = tuple[int, str, str, str, str | None, str | None, str, float]


def _timestamptz(at: float, prefix: timestamps.SecondPrefix) -> str:
    """`at` as timestamptz text: less than half of what a datetime per row costs us and psycopg."""
    second = int(at)
    return f"{prefix(second)}.{int((at - second) * 1_000_000):06d}+00"


class FetchWriter:
    def __init__(self, db_store: store.Store, gather_s: float = FLUSH_INTERVAL_S) -> None:
        """gather_s: how long a batch gathers after its first row (0: the caller batches)."""
        self.store = db_store
        self.gather_s = gather_s
        self._lock = threading.Lock()
        self._pending: list[Row] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Phones asking for a device file nobody created (provisioning_wsgi/unknown.py).
        self.unknown = UnknownPhones()
        # Plain-port fetches recorded lately: (device id, file, version) -> time.monotonic().
        self._recent: dict[tuple[int, str, str], float] = {}
        self._recent_swept = time.monotonic()

    def record(self, device_id: int, port: str, file: str, config_version: str,
               client_addr: str | None, user_agent: str | None, read_snapshot: str,
               at: float | None = None) -> None:
        """at: when the phone asked (time.time()); now if not given."""
        if port == "bootstrap":
            key, now = (device_id, file, config_version), time.monotonic()
            # Two threads passing at once for one key, or a write into the map the writer thread
            # is just sweeping away, can only cost a second row, which is harmless.
            if now - self._recent.get(key, 0.0) < REPEAT_WINDOW_S:
                return
            self._recent[key] = now
        row: Row = (device_id, port, file, config_version, client_addr, user_agent,
                    read_snapshot, time.time() if at is None else at)
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                del self._pending[: MAX_PENDING // 10]
                log.warning("fetch records: queue full, oldest %d dropped", MAX_PENDING // 10)
            self._pending.append(row)
        if not self._wake.is_set():  # set() takes a lock and notifies: not once per request
            self._wake.set()

    def note_unknown(self, vendor: str, mac: str, user_agent: str | None,
                     client_addr: str | None) -> None:
        """A fetch of a device file for a MAC no device has: noted, written with the fetches."""
        self.unknown.note(vendor, mac, user_agent, client_addr)
        if not self._wake.is_set():
            self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._write_forever, name="fetch-writer",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _write_forever(self) -> None:
        while True:
            # Unknown phones noted are written once a second at most: come back for them.
            self._wake.wait(UNKNOWN_WRITE_S if self.unknown.pending() else None)
            if not self._stop.is_set() and self.gather_s:
                self._stop.wait(self.gather_s)  # let a batch gather
            self._wake.clear()
            written = self.write_pending()
            if self.unknown.due() or (self._stop.is_set() and self.unknown.pending()):
                self.unknown.write(self.store)
            if self._stop.is_set():
                if not written:
                    log.error("fetch records: %d lost at shutdown", len(self._pending))
                    return
                if not self._pending:
                    return
            elif not written:
                self._stop.wait(RECONNECT_S)
                self._wake.set()

    def _sweep_recent(self) -> None:
        """Forget repeats older than the window, once per window: the map stays as small as the
        set of devices that fetched lately."""
        now = time.monotonic()
        if now - self._recent_swept < REPEAT_WINDOW_S:
            return
        self._recent_swept = now
        self._recent = {key: at for key, at in self._recent.items()
                        if now - at < REPEAT_WINDOW_S}

    def write_pending(self) -> bool:
        """Insert what is queued; False (and the rows kept) if the database failed."""
        self._sweep_recent()
        with self._lock:
            rows, self._pending = self._pending, []
        if not rows:
            return True

        def insert(conn: store.Conn) -> None:
            prefix = timestamps.SecondPrefix(time.gmtime)
            with conn.cursor() as cur, cur.copy(_COPY) as copy:
                for *head, addr, agent, snap, at in rows:
                    copy.write_row((*head, config_fetch.client_address(addr),
                                    config_fetch.user_agent_text(agent), snap,
                                    _timestamptz(at, prefix)))

        def existing(conn: store.Conn) -> set[int]:
            ids = list({row[0] for row in rows})
            return {found for (found,) in conn.execute(_EXISTING, (ids,))}

        for _attempt in range(3):
            try:
                try:
                    self.store.run(insert, transaction=False)  # COPY is one statement
                    return True
                except psycopg.errors.ForeignKeyViolation:
                    # A device deleted as we wrote: its fetches go, as its rows would have.
                    kept = self.store.run(existing, transaction=False)
                    rows = [row for row in rows if row[0] in kept]
                    if not rows:
                        return True
            except (store.DatabaseUnavailableError, psycopg.Error) as exc:
                log.warning("fetch records: %d not written yet: %s", len(rows), str(exc).strip())
                break
        with self._lock:
            self._pending[:0] = rows
        return False
