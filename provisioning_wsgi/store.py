"""The service's database access: devices, their lines, and the record of each fetch.

Each server thread keeps one connection, opened on first use, so requests never queue for a
connection; a connection that failed is dropped and the next request opens a new one. That is
how the service rides out a database restart: requests answer 503 while it is down and work again
as soon as it is back, without restarting the service.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from autoprov import db
from autoprov.config import Settings
from provisioning_wsgi.render import Device, Line

Conn = psycopg.Connection[Any]
T = TypeVar("T")

# A phone waits for its answer; better a quick 503 than a hung worker thread.
CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 5000


class DatabaseUnavailableError(RuntimeError):
    """The database cannot be reached or failed; the request is answered 503."""


class Store:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._local = threading.local()

    def _connect(self) -> Conn:
        try:
            conn = psycopg.connect(db.url(self.settings), autocommit=True,
                                   connect_timeout=CONNECT_TIMEOUT_S,
                                   application_name="autoprov-provisioning",
                                   options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}")
        except (psycopg.Error, OSError) as exc:
            # OSError: the private cluster's password file is not there (cluster not created).
            raise DatabaseUnavailableError(str(exc).strip()) from None
        return conn

    def _drop(self) -> None:
        conn: Conn | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def run(self, work: Callable[[Conn], T], *, transaction: bool = True) -> T:
        """``work`` in one transaction on this thread's connection.

        transaction=False: each statement on its own (autocommit), for work that is a single
        read, which saves the BEGIN and COMMIT round trips.

        A kept connection may have died since its last use (database restarted): then the work
        is tried once more on a fresh one before giving up.
        """
        for _attempt in range(2):
            conn: Conn | None = getattr(self._local, "conn", None)
            reused = conn is not None and not conn.closed
            if conn is None or conn.closed:
                conn = self._connect()
                self._local.conn = conn
            try:
                if not transaction:
                    return work(conn)
                with conn.transaction():
                    return work(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._drop()
                if not reused:
                    raise DatabaseUnavailableError(str(exc).strip()) from None
        raise DatabaseUnavailableError("no working connection")


# Each read also returns its own snapshot, recorded with the fetch: which changes the served
# config holds is then exact (see sql/003_config_fetch.sql).

def find_device(conn: Conn, mac: str) -> tuple[Device, str] | None:
    row = conn.execute(
        "SELECT id, mac, vendor, model, sip_transport, pg_current_snapshot()::text"
        "  FROM autoprov.device WHERE mac = %s", (mac,)
    ).fetchone()
    return (Device(*row[:5]), row[5]) if row else None


# Devices and their lines, one row per line (or one with NULL line columns for a device with
# none), in one statement's snapshot; {where} picks the devices.
DEVICES_WITH_LINES = """
SELECT d.id, d.mac, d.vendor, d.model, d.sip_transport, pg_current_snapshot()::text,
       l.line_no, s.username, s.domain, s.password, l.display_name
  FROM autoprov.device d
  LEFT JOIN autoprov.device_line l ON l.device_id = d.id
  LEFT JOIN subscriber s ON s.id = l.subscriber_id
 WHERE {where}
 ORDER BY d.id, l.line_no
"""
_DEVICE_WITH_LINES = DEVICES_WITH_LINES.format(where="d.mac = %s")


def devices_with_lines(rows: list[tuple[Any, ...]]) -> list[tuple[Device, list[Line], str]]:
    """DEVICES_WITH_LINES' rows as (device, its lines, the snapshot read in), by device."""
    found: list[tuple[Device, list[Line], str]] = []
    for row in rows:
        if not found or found[-1][0].id != row[0]:
            found.append((Device(*row[:5]), [], row[5]))
        if row[6] is not None:
            found[-1][1].append(Line(row[6], row[7], row[8], row[9] or "", row[10] or ""))
    return found


def find_device_with_lines(conn: Conn, mac: str) -> tuple[Device, list[Line], str] | None:
    """The device and its lines from one statement, so from one consistent snapshot."""
    found = devices_with_lines(conn.execute(_DEVICE_WITH_LINES, (mac,)).fetchall())
    return found[0] if found else None


def listening(settings: Settings, channel: str, application_name: str) -> Conn:
    """An autocommit connection LISTENing on `channel` (a context manager, as any)."""
    conn = psycopg.connect(db.url(settings), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                           application_name=application_name)
    try:
        conn.execute(f"LISTEN {channel}")
    except BaseException:
        conn.close()
        raise
    return conn
