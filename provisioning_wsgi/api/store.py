"""The API's SQL on subscribers and devices: the tables a DBA edits, so the same triggers run
(a changed line or password resyncs its device, a new device registers with its vendor's
redirect service). A device in full is devices.show(), what `autoprov device show` prints."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from autoprov import devices
from provisioning_wsgi.api.problem import ApiError, FieldError, conflict, invalid, not_found
from provisioning_wsgi.api.validate import DeviceChange, Line, NewDevice, NewSubscriber

Conn = psycopg.Connection[Any]

_LIVE = ("EXISTS (SELECT 1 FROM location loc WHERE loc.username = s.username"
         " AND loc.domain = s.domain AND loc.expires > localtimestamp)")

# Subscribers

_SUBSCRIBERS_SQL = """
SELECT s.id, s.username, s.domain, s.username || '@' || s.domain AS aor,
       COALESCE((SELECT json_agg(json_build_object('mac', d.mac, 'line', l.line_no)
                                 ORDER BY d.mac, l.line_no)
                   FROM autoprov.device_line l JOIN autoprov.device d ON d.id = l.device_id
                  WHERE l.subscriber_id = s.id), '[]'::json) AS lines
  FROM subscriber s
"""


def _subscriber(row: dict[str, Any]) -> dict[str, Any]:
    row.pop("id")
    return row


def create_subscriber(conn: Conn, new: NewSubscriber) -> dict[str, Any]:
    try:
        with conn.transaction():
            conn.execute("INSERT INTO subscriber (username, domain, password)"
                         " VALUES (%s, %s, %s)", (new.username, new.domain, new.password))
    except psycopg.errors.UniqueViolation:
        raise conflict(f"subscriber {new.username}@{new.domain} exists",
                       [FieldError("username", "taken in this domain")]) from None
    return show_subscriber(conn, new.username, new.domain)


def show_subscriber(conn: Conn, username: str, domain: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_SUBSCRIBERS_SQL + " WHERE s.username = %s AND s.domain = %s",
                          (username, domain)).fetchone()
    if row is None:
        raise not_found(f"no subscriber {username}@{domain}")
    return _subscriber(row)


def list_subscribers(conn: Conn, domain: str | None, after: int,
                     limit: int) -> tuple[list[dict[str, Any]], int | None]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_SUBSCRIBERS_SQL + " WHERE (%s::text IS NULL OR s.domain = %s)"
                           " AND s.id > %s ORDER BY s.id LIMIT %s",
                           (domain, domain, after, limit + 1)).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    last = int(rows[-1]["id"]) if more else None
    return [_subscriber(r) for r in rows], last


def recent_subscribers(conn: Conn, limit: int) -> list[dict[str, Any]]:
    """The newest subscribers first (the pages' list and picker)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_SUBSCRIBERS_SQL + " ORDER BY s.id DESC LIMIT %s",
                           (limit,)).fetchall()
    conn.commit()
    return [_subscriber(r) for r in rows]


def set_password(conn: Conn, username: str, domain: str, password: str) -> None:
    with conn.transaction():
        done = conn.execute("UPDATE subscriber SET password = %s"
                            " WHERE username = %s AND domain = %s",
                            (password, username, domain)).rowcount
    if not done:
        raise not_found(f"no subscriber {username}@{domain}")


def delete_subscriber(conn: Conn, username: str, domain: str) -> None:
    try:
        with conn.transaction():
            done = conn.execute("DELETE FROM subscriber WHERE username = %s AND domain = %s",
                                (username, domain)).rowcount
    except psycopg.errors.ForeignKeyViolation:
        # The schema's ON DELETE RESTRICT: a phone still uses it.
        used = show_subscriber(conn, username, domain)["lines"]
        where = ", ".join(f"{u['mac']} line {u['line']}" for u in used)
        raise conflict(f"subscriber {username}@{domain} is used by {where}: "
                       "change or delete those lines first") from None
    if not done:
        raise not_found(f"no subscriber {username}@{domain}")


# Devices

_DEVICES_SQL = f"""
SELECT d.mac, d.vendor, d.model, COALESCE(l.registered, false) AS registered,
       COALESCE(l.lines, '[]'::json) AS lines
  FROM autoprov.device d
  LEFT JOIN LATERAL (
        SELECT bool_or(x.live) AS registered,
               json_agg(json_build_object('line', x.line_no, 'aor', x.aor,
                                          'display_name', x.display_name,
                                          'registered', x.live) ORDER BY x.line_no) AS lines
          FROM (SELECT dl.line_no, dl.display_name, s.username || '@' || s.domain AS aor,
                       {_LIVE} AS live
                  FROM autoprov.device_line dl JOIN subscriber s ON s.id = dl.subscriber_id
                 WHERE dl.device_id = d.id) x) l ON true
 WHERE (%(vendor)s::text IS NULL OR d.vendor = %(vendor)s)
   AND (%(model)s::text IS NULL OR d.model = %(model)s)
   AND (%(registered)s::boolean IS NULL OR COALESCE(l.registered, false) = %(registered)s)
   AND d.mac > %(after)s
 ORDER BY d.mac LIMIT %(limit)s
"""


def list_devices(conn: Conn, vendor: str | None, model: str | None, registered: bool | None,
                 after: str, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_DEVICES_SQL, {"vendor": vendor, "model": model,
                                          "registered": registered, "after": after,
                                          "limit": limit + 1}).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (str(rows[-1]["mac"]) if more else None)


def show_device(conn: Conn, mac: str) -> dict[str, Any]:
    try:
        return devices.show(conn, mac)
    except devices.DeviceError:
        raise not_found(f"no device {mac}") from None
    finally:
        conn.commit()


def _device_id(conn: Conn, mac: str) -> int:
    row = conn.execute("SELECT id FROM autoprov.device WHERE mac = %s FOR UPDATE",
                       (mac,)).fetchone()
    if row is None:
        raise not_found(f"no device {mac}")
    return int(row[0])


def _subscriber_ids(conn: Conn, lines: list[Line]) -> list[int]:
    """The lines' subscribers, in order; a missing one is its line's field error."""
    rows = conn.execute(
        "SELECT s.id FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS w(u, d, i)"
        "  LEFT JOIN subscriber s ON s.username = w.u AND s.domain = w.d ORDER BY w.i",
        ([ln.username for ln in lines], [ln.domain for ln in lines])).fetchall()
    errors = [FieldError(f"lines[{i}].subscriber",
                         f"no subscriber {ln.username}@{ln.domain}: create it first")
              for i, (ln, row) in enumerate(zip(lines, rows, strict=True)) if row[0] is None]
    if errors:
        raise invalid(errors)
    return [int(row[0]) for row in rows]


def _write_lines(conn: Conn, device_id: int, lines: list[Line]) -> None:
    """Make the device's lines these, touching only rows that change (each change resyncs)."""
    ids = _subscriber_ids(conn, lines)
    numbers = [ln.line for ln in lines]
    conn.execute("DELETE FROM autoprov.device_line WHERE device_id = %s"
                 " AND line_no <> ALL (%s::int[])", (device_id, numbers))
    conn.execute(
        "INSERT INTO autoprov.device_line (device_id, line_no, subscriber_id, display_name)"
        " SELECT %s, * FROM unnest(%s::int[], %s::int[], %s::text[])"
        " ON CONFLICT (device_id, line_no) DO UPDATE"
        "   SET subscriber_id = EXCLUDED.subscriber_id, display_name = EXCLUDED.display_name"
        " WHERE (device_line.subscriber_id, device_line.display_name)"
        "       IS DISTINCT FROM (EXCLUDED.subscriber_id, EXCLUDED.display_name)",
        (device_id, numbers, ids, [ln.display_name for ln in lines]))


def _refused(exc: psycopg.errors.IntegrityError) -> ApiError:
    """What the schema refused that the checks before it let through."""
    return invalid([], f"refused by the database: {exc.diag.message_primary}")


def create_device(conn: Conn, new: NewDevice) -> dict[str, Any]:
    try:
        with conn.transaction():
            if not conn.execute("SELECT 1 FROM autoprov.vendor WHERE name = %s",
                                (new.vendor,)).fetchone():
                raise invalid([FieldError("vendor", f"unknown vendor {new.vendor!r}: "
                                          "GET /api/v1/vendors lists them")])
            row = conn.execute(
                "INSERT INTO autoprov.device (mac, vendor, model, serial_number)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (mac) DO NOTHING RETURNING id",
                (new.mac, new.vendor, new.model, new.serial_number)).fetchone()
            if row is None:
                raise conflict(f"device {new.mac} exists",
                               [FieldError("mac", "a device with this MAC exists")])
            _write_lines(conn, int(row[0]), new.lines)
    except psycopg.errors.IntegrityError as exc:
        raise _refused(exc) from None
    return show_device(conn, new.mac)


def change_device(conn: Conn, mac: str, change: DeviceChange) -> dict[str, Any]:
    try:
        with conn.transaction():
            device_id = _device_id(conn, mac)
            if change.model is not None:
                conn.execute("UPDATE autoprov.device SET model = %s"
                             " WHERE id = %s AND model IS DISTINCT FROM %s",
                             (change.model, device_id, change.model))
            if change.serial_number is not None:
                conn.execute("UPDATE autoprov.device SET serial_number = %s"
                             " WHERE id = %s AND serial_number IS DISTINCT FROM %s",
                             (change.serial_number, device_id, change.serial_number))
            if change.lines is not None:
                _write_lines(conn, device_id, change.lines)
    except psycopg.errors.IntegrityError as exc:
        raise _refused(exc) from None
    return show_device(conn, mac)


def delete_device(conn: Conn, mac: str) -> None:
    try:
        devices.remove(conn, mac)
    except devices.DeviceError:
        raise not_found(f"no device {mac}") from None


def fetches(conn: Conn, mac: str, limit: int) -> list[dict[str, Any]]:
    """The device's latest config fetches, newest first."""
    _device_id(conn, mac)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT f.id, f.port, f.file, f.config_version, host(f.client_addr) AS client_addr,"
            "       f.user_agent, f.fetched_at"
            "  FROM autoprov.config_fetch f JOIN autoprov.device d ON d.id = f.device_id"
            " WHERE d.mac = %s ORDER BY f.fetched_at DESC, f.id DESC LIMIT %s",
            (mac, limit)).fetchall()
    conn.commit()
    return rows


def vendors(conn: Conn) -> list[dict[str, Any]]:
    """Every vendor and the models its devices have."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT v.name, v.redirect_service,"
            "       COALESCE((SELECT json_agg(json_build_object('model', m.model,"
            "                                                   'devices', m.n)"
            "                                 ORDER BY m.model)"
            "                   FROM (SELECT model, count(*) AS n FROM autoprov.device"
            "                          WHERE vendor = v.name GROUP BY model) m), '[]'::json)"
            "           AS models"
            "  FROM autoprov.vendor v ORDER BY v.name").fetchall()
    conn.commit()
    return rows
