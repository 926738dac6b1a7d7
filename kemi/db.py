"""One database connection per Kamailio process, opened lazily (after the fork, never before).

A broken connection (database restart) is dropped and reopened on the next call, so the proxy
keeps registering phones while Postgres is away and resumes resyncs when it is back.
"""

from __future__ import annotations

import os
import select
from typing import Any

import psycopg

_conn: psycopg.Connection[Any] | None = None
_listening: dict[str, psycopg.Connection[Any]] = {}  # one LISTENing connection per channel
CONNECT_TIMEOUT = 3


def _url() -> str:
    return os.environ["AUTOPROV_DB_URL"]


def _open() -> psycopg.Connection[Any]:
    return psycopg.connect(_url(), autocommit=True, connect_timeout=CONNECT_TIMEOUT)


def query(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement (autocommit) and return its rows; reconnect once if the link broke."""
    global _conn
    for attempt in (1, 2):
        try:
            if _conn is None or _conn.closed:
                _conn = _open()
            cur = _conn.execute(sql, params)
            return cur.fetchall() if cur.description else []
        except psycopg.OperationalError:
            if _conn is not None:
                _conn.close()
            _conn = None
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def wait_for_notification(timeout: float) -> bool:
    """Sleep until a NOTIFY arrives on any channel LISTENed to (True), or `timeout` seconds (the
    idle timer: woken at once by the database, not every tick for nothing)."""
    fds = [conn.fileno() for conn in _listening.values() if not conn.closed]
    if not fds:
        return False
    try:
        return bool(select.select(fds, [], [], timeout)[0])
    except (OSError, ValueError):
        return False


def notifications(channel: str) -> list[str] | None:
    """The payloads NOTIFYed on `channel` since the last call (LISTENing on first use); None
    right after (re)connecting, when some may have been missed; [] while the database is away."""
    conn = _listening.get(channel)
    if conn is None or conn.closed:
        try:
            conn = _listening[channel] = _open()
            conn.execute(f"LISTEN {channel}")
        except psycopg.OperationalError:
            _listening.pop(channel, None)
            return []
        return None
    try:
        # Called every timer tick: most ticks nothing arrived, and asking the socket is far
        # cheaper than psycopg's notifies() (which reads and drains everything that did).
        if not select.select([conn.fileno()], [], [], 0)[0]:
            return []
        return [n.payload for n in conn.notifies(timeout=0)]
    except psycopg.OperationalError:
        conn.close()
        _listening.pop(channel, None)
        return []
