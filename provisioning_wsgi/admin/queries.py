"""What the operators' pages read: every device's state at once, and fetches since a point.

One device's full state is devices.show(), the same as `autoprov device show`.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

Conn = psycopg.Connection[Any]

# One statement for the whole fleet: each device's lines with their live bindings, its latest
# fetch, its latest resync with the latest outcome per notified contact, its redirect state.
_DEVICES_SQL = """
SELECT d.mac, d.vendor, d.model,
       COALESCE(l.lines, '[]'::json) AS lines,
       f.port AS fetch_port, f.file AS fetch_file, f.fetched_at,
       r.id AS resync_id, r.reason AS resync_reason, r.state AS resync_state,
       r.checked AS resync_checked, r.created_at AS resync_at,
       COALESCE(o.outcomes, '{}'::json) AS resync_outcomes,
       dr.service AS redirect_service, dr.status AS redirect_status
  FROM autoprov.device d
  LEFT JOIN LATERAL (
        SELECT json_agg(json_build_object(
                   'line', dl.line_no, 'aor', s.username || '@' || s.domain,
                   'contacts', (SELECT count(*) FROM location loc
                                 WHERE loc.username = s.username AND loc.domain = s.domain
                                   AND loc.expires > localtimestamp))
                   ORDER BY dl.line_no) AS lines
          FROM autoprov.device_line dl JOIN subscriber s ON s.id = dl.subscriber_id
         WHERE dl.device_id = d.id) l ON true
  LEFT JOIN LATERAL (
        SELECT port, file, fetched_at FROM autoprov.config_fetch
         WHERE device_id = d.id ORDER BY fetched_at DESC, id DESC LIMIT 1) f ON true
  LEFT JOIN LATERAL (
        SELECT id, reason, state, checked, created_at FROM autoprov.resync_request
         WHERE device_id = d.id ORDER BY id DESC LIMIT 1) r ON true
  LEFT JOIN LATERAL (
        SELECT json_object_agg(outcome, n) AS outcomes
          FROM (SELECT outcome, count(*) AS n
                  FROM (SELECT DISTINCT ON (ruid) state AS outcome
                          FROM autoprov.resync_notify
                         WHERE request_id = r.id
                           AND attempt = (SELECT max(attempt) FROM autoprov.resync_notify
                                           WHERE request_id = r.id)
                         ORDER BY ruid, id DESC) latest
                 GROUP BY outcome) counted) o ON true
  LEFT JOIN autoprov.device_redirect dr ON dr.mac = d.mac
 ORDER BY d.mac
"""


def device_rows(conn: Conn) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_DEVICES_SQL).fetchall()


def find_device(conn: Conn, mac: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT mac, vendor, model FROM autoprov.device WHERE mac = %s",
                           (mac,)).fetchone()


def devices_of_vendors(conn: Conn, vendors: list[str]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT mac, vendor, model FROM autoprov.device"
                           " WHERE vendor = ANY(%s) ORDER BY mac", (vendors,)).fetchall()


def last_fetch_id(conn: Conn, mac: str) -> int:
    row = conn.execute(
        "SELECT coalesce(max(f.id), 0) FROM autoprov.config_fetch f"
        "  JOIN autoprov.device d ON d.id = f.device_id WHERE d.mac = %s", (mac,)).fetchone()
    return int(row[0]) if row else 0


def fetches_after(conn: Conn, mac: str, after_id: int, limit: int = 20) -> list[dict[str, Any]]:
    """The device's fetches recorded after fetch id ``after_id``, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT f.id, f.port, f.file, f.fetched_at, host(f.client_addr) AS client_addr"
            "  FROM autoprov.config_fetch f JOIN autoprov.device d ON d.id = f.device_id"
            " WHERE d.mac = %s AND f.id > %s ORDER BY f.id LIMIT %s",
            (mac, after_id, limit)).fetchall()
    for row in rows:
        row["fetched_at"] = row["fetched_at"].isoformat()
    return rows


def registered(conn: Conn, mac: str) -> bool:
    """Whether any line of the device has a live binding (a NOTIFY can reach the phone)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM autoprov.device d"
        "  JOIN autoprov.device_line dl ON dl.device_id = d.id"
        "  JOIN subscriber s ON s.id = dl.subscriber_id"
        "  JOIN location loc ON loc.username = s.username AND loc.domain = s.domain"
        " WHERE d.mac = %s AND loc.expires > localtimestamp)", (mac,)).fetchone()
    return bool(row and row[0])
