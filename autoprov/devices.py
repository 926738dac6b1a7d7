"""Devices and their lines: the queries behind `autoprov device ...`.

Everything here is plain SQL on the tables a DBA edits by hand, so the CLI and psql have the
same effects (triggers do the rest).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from autoprov import config_fetch, resync
from autoprov.mac import normalize
from autoprov.redirect import state as redirect_state

_LINE_SPEC = re.compile(r"^(\d+)=([^@\s]+)@([^@\s]+)$")
# As sql/019's check: what the label on a phone's box shows (Grandstream GDMS needs it).
SERIAL = re.compile(r"[A-Za-z0-9]{1,64}")


class DeviceError(ValueError):
    """A device request that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class LineSpec:
    line_no: int
    username: str
    domain: str

    @classmethod
    def parse(cls, text: str) -> LineSpec:
        match = _LINE_SPEC.match(text.strip())
        if not match:
            raise DeviceError(
                f"invalid line {text!r}: expected N=USER@DOMAIN, e.g. 1=alice@example.test"
            )
        return cls(int(match.group(1)), match.group(2), match.group(3))


Conn = psycopg.Connection[Any]


def check_serial(serial: str) -> str:
    """A serial number as printed on the phone's label (letters and digits)."""
    if not SERIAL.fullmatch(serial):
        raise DeviceError(f"invalid serial number {serial!r}: 1 to 64 letters and digits")
    return serial


def add(conn: Conn, mac: str, vendor: str, model: str, lines: list[LineSpec],
        serial: str | None = None) -> None:
    mac = normalize(mac)
    if serial is not None:
        check_serial(serial)
    if len({line.line_no for line in lines}) != len(lines):
        raise DeviceError("a line number is given twice")
    with conn.transaction():
        if not conn.execute("SELECT 1 FROM autoprov.vendor WHERE name = %s", (vendor,)).fetchone():
            raise DeviceError(f"unknown vendor {vendor!r}")
        try:
            row = conn.execute(
                "INSERT INTO autoprov.device (mac, vendor, model, serial_number)"
                " VALUES (%s, %s, %s, %s) RETURNING id",
                (mac, vendor, model, serial),
            ).fetchone()
        except psycopg.errors.UniqueViolation:
            raise DeviceError(f"device {mac} already exists") from None
        except psycopg.errors.CheckViolation as exc:
            raise DeviceError(f"invalid device: {exc.diag.message_primary}") from None
        assert row is not None
        for line in lines:
            sub = conn.execute(
                "SELECT id FROM subscriber WHERE username = %s AND domain = %s",
                (line.username, line.domain),
            ).fetchone()
            if sub is None:
                raise DeviceError(
                    f"no subscriber {line.username}@{line.domain}: create it first "
                    "(INSERT INTO subscriber (username, domain, password) ...)"
                )
            if not 1 <= line.line_no <= 64:
                raise DeviceError(f"line number {line.line_no} out of range 1..64")
            conn.execute(
                "INSERT INTO autoprov.device_line (device_id, line_no, subscriber_id)"
                " VALUES (%s, %s, %s)",
                (row[0], line.line_no, sub[0]),
            )


def remove(conn: Conn, mac: str) -> None:
    mac = normalize(mac)
    with conn.transaction():
        if conn.execute("DELETE FROM autoprov.device WHERE mac = %s", (mac,)).rowcount == 0:
            raise DeviceError(f"no device {mac}")


_LINES_SQL = """
SELECT l.line_no, s.username, s.domain, l.display_name,
       (SELECT count(*) FROM location loc
         WHERE loc.username = s.username AND loc.domain = s.domain
           AND loc.expires > localtimestamp) AS contacts
  FROM autoprov.device_line l JOIN subscriber s ON s.id = l.subscriber_id
 WHERE l.device_id = %s
 ORDER BY l.line_no
"""


def show(conn: Conn, mac: str) -> dict[str, Any]:
    mac = normalize(mac)
    with conn.cursor(row_factory=dict_row) as cur:
        device = cur.execute(
            "SELECT id, mac, vendor, model, serial_number, created_at, updated_at"
            "  FROM autoprov.device"
            " WHERE mac = %s", (mac,)
        ).fetchone()
        if device is None:
            raise DeviceError(f"no device {mac}")
        lines = cur.execute(_LINES_SQL, (device["id"],)).fetchall()
    return {
        "mac": device["mac"],
        "vendor": device["vendor"],
        "model": device["model"],
        "serial_number": device["serial_number"],
        "created_at": device["created_at"].isoformat(),
        "updated_at": device["updated_at"].isoformat(),
        "lines": [
            {
                "line": line["line_no"],
                "aor": f"{line['username']}@{line['domain']}",
                "display_name": line["display_name"],
                "registered": line["contacts"] > 0,
                "contacts": line["contacts"],
            }
            for line in lines
        ],
        "resync": resync.latest_for_device(conn, device["id"]),
        "last_config_fetch": config_fetch.last(conn, device["id"]),
        **redirect_state.fragment(conn, mac),
    }


def unknown(conn: Conn) -> list[dict[str, Any]]:
    """Phones that asked for a device file nobody created (sql/016), most recently seen first."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT mac, vendor, model, firmware, address, first_seen, last_seen, fetch_count,"
            "       user_agent FROM autoprov.unknown_device ORDER BY last_seen DESC, mac"
        ).fetchall()
    return [dict(r) for r in rows]


def listing(conn: Conn) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT d.mac, d.vendor, d.model, count(l.line_no) AS lines"
            "  FROM autoprov.device d LEFT JOIN autoprov.device_line l ON l.device_id = d.id"
            " GROUP BY d.id ORDER BY d.mac"
        ).fetchall()
    return [dict(r) for r in rows]
