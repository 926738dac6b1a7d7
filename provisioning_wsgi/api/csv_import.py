"""POST /api/v1/devices/import: devices, lines and missing subscribers from a spreadsheet.

One row per device line: mac,vendor,model,line,username,domain,password,display_name, and
optionally serial_number (on any one row of the device, or all of them alike). Every
row is checked first (all faults reported, by row); then the whole file goes in as a few
set-based statements (COPY into a temporary table, INSERT ... SELECT), in one transaction:
all rows or none. A dry run does the same and rolls back, so it reports what the database
itself would say.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

import psycopg

from autoprov.devices import SERIAL
from autoprov.mac import InvalidMacError, normalize
from provisioning_wsgi.api.problem import ApiError, FieldError, invalid
from provisioning_wsgi.api.validate import MAX_LINES

COLUMNS = ("mac", "vendor", "model", "line", "username", "domain", "password", "display_name")
OPTIONAL = ("serial_number",)
MAX_ROWS = 20_000
# Kamailio's varchar(64) columns; the rest is text. Account parts hold no @ or blank (the API
# names an account USER@DOMAIN).
_LIMITS = {"username": 64, "domain": 64, "password": 64}
_FORBIDDEN_IN_NAMES = set("@ \t")

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class Row:
    number: int  # the file's line (the header is line 1)
    mac: str
    vendor: str
    model: str
    line: int
    username: str
    domain: str
    password: str
    display_name: str
    serial_number: str = ""


def parse(text: str) -> tuple[list[Row], list[FieldError], int]:
    """The rows that are well-formed on their own, every fault of the others, how many."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise invalid([FieldError(c, "column missing from the header", 1) for c in missing],
                      f"the first line must name the columns: {','.join(COLUMNS)}")
    where = {c: header.index(c) for c in COLUMNS + OPTIONAL if c in header}
    rows, errors, total = [], [], 0
    for number, record in enumerate(reader, start=2):
        if not any(cell.strip() for cell in record):
            continue
        total += 1
        if total > MAX_ROWS:
            raise ApiError(413, "too-many-rows", f"at most {MAX_ROWS} rows per import")
        cells = {c: "" for c in OPTIONAL}
        cells.update({c: (record[i].strip() if i < len(record) else "")
                      for c, i in where.items()})
        # A password keeps its blanks: it is the phone's to send.
        cells["password"] = record[where["password"]] if where["password"] < len(record) else ""
        found = _check(number, cells)
        if found:
            errors += found
            continue
        rows.append(Row(number, normalize(cells["mac"]), cells["vendor"], cells["model"],
                        int(cells["line"]), cells["username"], cells["domain"],
                        cells["password"], cells["display_name"], cells["serial_number"]))
    return rows, errors, total


def _check(number: int, cells: dict[str, str]) -> list[FieldError]:
    errors = []
    try:
        normalize(cells["mac"])
    except InvalidMacError as exc:
        errors.append(FieldError("mac", str(exc), number))
    for name in ("vendor", "model", "username", "domain"):
        if not cells[name]:
            errors.append(FieldError(name, "required", number))
    for name, limit in _LIMITS.items():
        if len(cells[name]) > limit:
            errors.append(FieldError(name, f"at most {limit} characters", number))
    for name in ("username", "domain"):
        if _FORBIDDEN_IN_NAMES & set(cells[name]):
            errors.append(FieldError(name, "no @ or blank", number))
    if cells["serial_number"] and not SERIAL.fullmatch(cells["serial_number"]):
        errors.append(FieldError("serial_number", "1 to 64 letters and digits", number))
    if not (cells["line"].isdigit() and 1 <= int(cells["line"]) <= MAX_LINES):
        errors.append(FieldError("line", f"a number from 1 to {MAX_LINES}", number))
    return errors


def _consistent(rows: list[Row], vendors: set[str], devices: set[str],
                subscribers: dict[tuple[str, str], str]) -> list[FieldError]:
    """Faults between rows and against the database."""
    errors = []
    first: dict[str, Row] = {}
    serials: dict[str, str] = {}
    lines: set[tuple[str, int]] = set()
    passwords: dict[tuple[str, str], str] = {}
    # A new account's password may be on any one of its rows.
    given = {(r.username, r.domain) for r in rows if r.password}
    for row in rows:
        def fault(name: str, detail: str, row: Row = row) -> None:
            errors.append(FieldError(name, detail, row.number))
        if row.vendor not in vendors:
            fault("vendor", f"unknown vendor {row.vendor!r}")
        if row.mac in devices:
            fault("mac", f"device {row.mac} exists (the import only creates devices)")
        seen = first.setdefault(row.mac, row)
        if (seen.vendor, seen.model) != (row.vendor, row.model):
            fault("model", f"row {seen.number} gives device {row.mac} another vendor or model")
        serial = serials.setdefault(row.mac, row.serial_number) if row.serial_number else ""
        if serial != row.serial_number:
            fault("serial_number", f"another row gives device {row.mac} another serial number")
        if (row.mac, row.line) in lines:
            fault("line", f"line {row.line} of {row.mac} is given twice")
        lines.add((row.mac, row.line))
        account = (row.username, row.domain)
        if account in subscribers:
            if row.password and row.password != subscribers[account]:
                fault("password", f"subscriber {row.username}@{row.domain} exists with "
                      "another password (leave it empty, or change it with PATCH "
                      "/api/v1/subscribers/...)")
        elif account not in given:
            fault("password", f"required: subscriber {row.username}@{row.domain} is new")
        elif row.password and passwords.setdefault(account, row.password) != row.password:
            fault("password", f"another row gives {row.username}@{row.domain} "
                  "another password")
    return errors


def _lookups(conn: Conn, rows: list[Row]) -> tuple[set[str], set[str],
                                                    dict[tuple[str, str], str]]:
    vendors = {str(r[0]) for r in conn.execute("SELECT name FROM autoprov.vendor")}
    devices = {str(r[0]) for r in conn.execute(
        "SELECT mac FROM autoprov.device WHERE mac = ANY (%s::text[])",
        (sorted({r.mac for r in rows}),))}
    accounts = sorted({(r.username, r.domain) for r in rows})
    subscribers = {(str(r[0]), str(r[1])): str(r[2]) for r in conn.execute(
        "SELECT s.username, s.domain, s.password"
        "  FROM unnest(%s::text[], %s::text[]) AS w(u, d)"
        "  JOIN subscriber s ON s.username = w.u AND s.domain = w.d",
        ([a[0] for a in accounts], [a[1] for a in accounts]))}
    return vendors, devices, subscribers


_WRITE = (
    """INSERT INTO subscriber (username, domain, password)
       SELECT DISTINCT ON (username, domain) username, domain, password FROM import_row r
        WHERE password <> '' AND NOT EXISTS (SELECT 1 FROM subscriber s
                                             WHERE s.username = r.username
                                               AND s.domain = r.domain)
        ORDER BY username, domain""",
    """INSERT INTO autoprov.device (mac, vendor, model, serial_number)
       SELECT DISTINCT ON (mac) mac, vendor, model,
              (SELECT max(NULLIF(x.serial_number, '')) FROM import_row x WHERE x.mac = r.mac)
         FROM import_row r ORDER BY mac, number""",
    """INSERT INTO autoprov.device_line (device_id, line_no, subscriber_id, display_name)
       SELECT d.id, r.line_no, s.id, r.display_name FROM import_row r
         JOIN autoprov.device d ON d.mac = r.mac
         JOIN subscriber s ON s.username = r.username AND s.domain = r.domain""",
)


def _write(conn: Conn, rows: list[Row]) -> dict[str, int]:
    conn.execute("CREATE TEMPORARY TABLE import_row (number integer, mac text, vendor text,"
                 " model text, line_no integer, username text, domain text, password text,"
                 " display_name text, serial_number text) ON COMMIT DROP")
    with conn.cursor().copy("COPY import_row FROM STDIN") as copy:
        for r in rows:
            copy.write_row((r.number, r.mac, r.vendor, r.model, r.line, r.username, r.domain,
                            r.password, r.display_name, r.serial_number))
    counts = [conn.execute(sql).rowcount for sql in _WRITE]
    return {"subscribers_created": counts[0], "devices_created": counts[1],
            "lines_created": counts[2]}


def run(conn: Conn, text: str, dry_run: bool) -> dict[str, Any]:
    """The report; raises a ApiError (422, per row) when a real import has faults."""
    rows, errors, total = parse(text)
    with conn.transaction(force_rollback=dry_run):
        vendors, devices, subscribers = _lookups(conn, rows)
        errors += _consistent(rows, vendors, devices, subscribers)
        errors.sort(key=lambda e: e.row or 0)
        if errors and not dry_run:
            raise invalid(errors, f"{len({e.row for e in errors})} row(s) have faults: "
                          "nothing was imported")
        counts = {"subscribers_created": 0, "devices_created": 0, "lines_created": 0}
        if not errors:
            try:
                counts = _write(conn, rows)
            except psycopg.errors.IntegrityError as exc:
                raise invalid([], "refused by the database, nothing was imported: "
                              f"{exc.diag.message_primary}") from None
    return {"dry_run": dry_run, "rows": total,
            "valid": not errors, **counts, "errors": [e.as_dict() for e in errors]}
