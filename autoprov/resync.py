"""Asking for a resync and reading its outcome (the proxy does the sending: kemi/resync.py)."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg.rows import dict_row

from autoprov.mac import normalize

Conn = psycopg.Connection[Any]
# fetched: the phone fetched its config after the change, so nothing needed sending.
FINAL_REQUEST_STATES = {"done", "failed", "fetched"}


class NoSuchDeviceError(LookupError):
    pass


def request(conn: Conn, mac: str, reason: str = "cli") -> int:
    try:
        row = conn.execute("SELECT autoprov.request_resync(%s, %s)",
                           (normalize(mac), reason)).fetchone()
    except psycopg.errors.NoDataFound:
        raise NoSuchDeviceError(f"no device {normalize(mac)}") from None
    conn.commit()
    assert row is not None
    return int(row[0])


_CONTACTS_SQL = """
SELECT DISTINCT ON (n.ruid) n.line_no AS line, n.aor, n.contact, n.state AS outcome, n.code,
       n.challenged, n.credential, n.sent_at, n.answered_at
  FROM autoprov.resync_notify n
 WHERE n.request_id = %s
   AND n.attempt = (SELECT max(attempt) FROM autoprov.resync_notify WHERE request_id = %s)
 ORDER BY n.ruid, n.id DESC
"""


def status(conn: Conn, request_id: int) -> dict[str, Any]:
    """The request and, per notified contact, its latest outcome."""
    with conn.cursor(row_factory=dict_row) as cur:
        req = cur.execute(
            "SELECT r.id AS request_id, d.mac, r.reason, r.state, r.checked, r.attempts,"
            "       r.created_at, r.updated_at"
            "  FROM autoprov.resync_request r JOIN autoprov.device d ON d.id = r.device_id"
            " WHERE r.id = %s", (request_id,)).fetchone()
        if req is None:
            raise LookupError(f"no resync request {request_id}")
        contacts = cur.execute(_CONTACTS_SQL, (request_id, request_id)).fetchall()
    conn.commit()  # end the snapshot, so the next poll sees new outcomes
    req["contacts"] = sorted(contacts, key=lambda c: (c["line"], c["contact"]))
    return req


def settled(info: dict[str, Any]) -> bool:
    """Nothing more will happen without a REGISTER (or ever)."""
    return info["state"] in FINAL_REQUEST_STATES or (info["state"] == "pending"
                                                     and info["checked"])


def wait(conn: Conn, request_id: int, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    info = status(conn, request_id)
    while not settled(info) and time.monotonic() < deadline:
        time.sleep(0.1)
        info = status(conn, request_id)
    return info


def succeeded(info: dict[str, Any]) -> bool:
    """Every notified contact accepted (or the phone already fetched its current config)."""
    if info["state"] == "fetched":
        return True
    return bool(info["contacts"]) and all(c["outcome"] == "accepted" for c in info["contacts"])


def latest_for_device(conn: Conn, device_id: int) -> dict[str, Any] | None:
    row = conn.execute("SELECT id FROM autoprov.resync_request WHERE device_id = %s"
                       " ORDER BY id DESC LIMIT 1", (device_id,)).fetchone()
    return status(conn, int(row[0])) if row else None


def describe(contact: dict[str, Any]) -> str:
    code = f" {contact['code']}" if contact["code"] else ""
    extra = " after challenge" if contact["challenged"] and contact["outcome"] == "accepted" else ""
    return (f"line {contact['line']}  {contact['aor']}  {contact['contact']}  "
            f"{contact['outcome']}{code}{extra}")
