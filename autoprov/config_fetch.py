"""The record of configs phones fetched (table autoprov.config_fetch, sql/003_config_fetch.sql)."""

from __future__ import annotations

import functools
import ipaddress
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

Conn = psycopg.Connection[Any]

# User-Agent strings are the phone's to choose; keep a bounded amount.
_USER_AGENT_MAX = 300


@functools.lru_cache(maxsize=4096)  # a fleet fetches from far fewer addresses than it fetches
def client_address(client_addr: str | None) -> str | None:
    """The address as the inet column takes it; None if it is none (a unix socket, say)."""
    try:
        return str(ipaddress.ip_address(client_addr)) if client_addr else None
    except ValueError:
        return None


def user_agent_text(user_agent: str | None) -> str | None:
    """As much of the header as the text column holds: PostgreSQL text cannot hold NUL, which a
    client may send, and one such row would keep a whole batch of fetches from being recorded."""
    return user_agent[:_USER_AGENT_MAX].replace("\x00", "") if user_agent else None


def last(conn: Conn, device_id: int) -> dict[str, Any] | None:
    """The device's latest fetch on either port, for `autoprov device show`."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT port, file, config_version, host(client_addr) AS client_addr, user_agent,"
            "       fetched_at"
            "  FROM autoprov.config_fetch WHERE device_id = %s"
            " ORDER BY fetched_at DESC, id DESC LIMIT 1",
            (device_id,),
        ).fetchone()
    if row is None:
        return None
    row["fetched_at"] = row["fetched_at"].isoformat()
    return dict(row)


def prune(conn: Conn, keep: timedelta) -> int:
    """Delete old fetches, keeping each device's latest per port. Returns how many went."""
    row = conn.execute("SELECT autoprov.prune_config_fetch(%s)", (keep,)).fetchone()
    return int(row[0]) if row else 0


def describe(fetch: dict[str, Any] | None) -> str:
    """One line for `device show`."""
    if fetch is None:
        return "never"
    return (f"{fetch['fetched_at']} {fetch['port']} {fetch['file']} version "
            f"{fetch['config_version']} from {fetch['client_addr'] or '?'}")
