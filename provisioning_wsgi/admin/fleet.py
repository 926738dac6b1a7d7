"""The operators' pages that change the fleet: add, edit and delete devices, create
subscribers, import a CSV (checked row by row first) and export one.

Every change goes through the REST API's code (provisioning_wsgi/api: validate, store,
csv_import), so a page, the API and a DBA's SQL have the same rules and the same triggers.
Forms are plain HTML posts carrying the CSRF token, as the resync button's.

  GET  /admin/devices/new, POST /admin/devices           add a device (?mac=&vendor=&model=)
  GET  /admin/unknown                                    phones nobody created, to adopt
  GET  /admin/devices/MAC/edit, POST the same            change its model and lines
  POST /admin/devices/MAC/delete                         delete it
  GET  /admin/subscribers, POST the same                 list and create SIP accounts
  GET  /admin/import, POST the same                      check or import a CSV
  GET  /admin/export.csv                                 every device line, in the import's form
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Callable
from typing import Any

import psycopg

from autoprov import devices
from autoprov.mac import InvalidMacError, normalize
from provisioning_wsgi.admin import auth, web
from provisioning_wsgi.api import csv_import, store, validate
from provisioning_wsgi.api.problem import ApiError, FieldError

log = logging.getLogger("autoprov.provisioning")

Conn = psycopg.Connection[Any]
Render = Callable[..., web.Response]
Deny = auth.Deny
Handler = Callable[[web.Request, "re.Match[str]"], web.Response]
# Empty line rows a device form offers beyond the device's own.
SPARE_LINES = 2
# The newest subscribers the pages list and offer in a line's picker (any other is typed).
PICKER_SIZE = 1000
# A pasted spreadsheet: 5,000 rows are about 400 kB, urlencoded a little more.
MAX_IMPORT_FORM_BYTES = 4 * 1024 * 1024


class FleetPages:
    def __init__(self, connect: Callable[[], Conn], render: Render, deny: Deny) -> None:
        self.connect = connect
        self.render = render
        self.deny = deny
        mac = r"(?P<mac>[^/]+)"
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = [
            (method, re.compile(f"^{path}$"), handler) for method, path, handler in (
                ("GET", "/admin/devices/new", self.new_device),
                ("GET", "/admin/unknown", self.unknown_phones),
                ("POST", "/admin/devices", self.create_device),
                ("GET", f"/admin/devices/{mac}/edit", self.edit_device),
                ("POST", f"/admin/devices/{mac}/edit", self.change_device),
                ("POST", f"/admin/devices/{mac}/delete", self.delete_device),
                ("GET", "/admin/subscribers", self.subscribers),
                ("POST", "/admin/subscribers", self.create_subscriber),
                ("GET", "/admin/import", self.import_page),
                ("POST", "/admin/import", self.import_csv),
                ("GET", "/admin/export.csv", self.export),
            )]

    def _form(self, request: web.Request,
              limit: int = web.MAX_FORM_BYTES) -> dict[str, str] | web.Response:
        return auth.posted_form(request, self.deny, limit)

    def _changed(self, request: web.Request, what: str) -> None:
        log.info("change client=%s port=admin %s", request.client, what)

    # Devices

    def _device_form(self, request: web.Request, conn: Conn, device: dict[str, Any],
                     editing: bool, errors: list[FieldError] | None = None,
                     problem: str = "") -> web.Response:
        lines = list(device.get("lines", []))
        used = {line["line"] for line in lines}
        spare = [n for n in range(1, validate.MAX_LINES + 1) if n not in used][:SPARE_LINES]
        lines += [{"line": n, "aor": "", "display_name": ""} for n in spare]
        subscribers = store.recent_subscribers(conn, PICKER_SIZE)
        return self.render(request, "device_form.html", device=device, lines=lines,
                           editing=editing, vendors=store.vendors(conn),
                           subscribers=subscribers, errors=errors or [], problem=problem)

    def new_device(self, request: web.Request, match: re.Match[str]) -> web.Response:
        """The form, empty, or filled in from the query (an unknown phone's "adopt")."""
        prefill = {key: request.query.get(key, "")[:64] for key in ("mac", "vendor", "model")}
        with self.connect() as conn:
            return self._device_form(request, conn, prefill, editing=False)

    def unknown_phones(self, request: web.Request, match: re.Match[str]) -> web.Response:
        """Phones that asked for a config nobody created; each adopted through the device form
        (nothing is created without an operator)."""
        with self.connect() as conn:
            rows = devices.unknown(conn)
        return self.render(request, "unknown.html", phones=rows)

    @staticmethod
    def _lines(form: dict[str, str]) -> list[dict[str, Any]]:
        """The line rows the operator filled in (a row without an account is no line)."""
        rows = sorted(int(found[1]) for key in form
                      if (found := re.fullmatch(r"line-(\d{1,2})-subscriber", key)))
        lines = []
        for n in rows:
            if not form[f"line-{n}-subscriber"].strip():
                continue
            number = form.get(f"line-{n}-number", "").strip()
            lines.append({"line": int(number) if number.isdigit() else number,
                          "subscriber": form[f"line-{n}-subscriber"].strip(),
                          "display_name": form.get(f"line-{n}-name", "")})
        return lines

    @staticmethod
    def _as_shown(body: dict[str, Any]) -> dict[str, Any]:
        """A refused form's values, to show them again."""
        return {**body, "lines": [{"line": ln["line"], "aor": ln["subscriber"],
                                   "display_name": ln["display_name"]}
                                  for ln in body.get("lines", [])]}

    def create_device(self, request: web.Request, match: re.Match[str]) -> web.Response:
        form = self._form(request)
        if isinstance(form, web.Response):
            return form
        body = {"mac": form.get("mac", ""), "vendor": form.get("vendor", ""),
                "model": form.get("model", ""), "lines": self._lines(form)}
        with self.connect() as conn:
            try:
                created = store.create_device(conn, validate.new_device(body))
            except ApiError as exc:
                conn.rollback()
                return self._device_form(request, conn, self._as_shown(body), False,
                                         exc.errors, exc.detail)
        self._changed(request, f"device={created['mac']} created")
        return web.redirect(f"/admin/devices/{created['mac']}")

    def _mac(self, match: re.Match[str]) -> str | None:
        try:
            return normalize(match["mac"])
        except InvalidMacError:
            return None

    def edit_device(self, request: web.Request, match: re.Match[str]) -> web.Response:
        mac = self._mac(match)
        with self.connect() as conn:
            try:
                device = store.show_device(conn, mac or "")
            except ApiError:
                return web.text(404, "unknown-device")
            return self._device_form(request, conn, device, editing=True)

    def change_device(self, request: web.Request, match: re.Match[str]) -> web.Response:
        form = self._form(request)
        if isinstance(form, web.Response):
            return form
        mac = self._mac(match)
        body = {"model": form.get("model", ""), "lines": self._lines(form)}
        with self.connect() as conn:
            try:
                store.change_device(conn, mac or "", validate.device_change(body))
            except ApiError as exc:
                conn.rollback()
                if exc.status == 404:
                    return web.text(404, "unknown-device")
                shown = {**store.show_device(conn, mac or ""), **self._as_shown(body)}
                return self._device_form(request, conn, shown, True, exc.errors, exc.detail)
        self._changed(request, f"device={mac} changed")
        return web.redirect(f"/admin/devices/{mac}")

    def delete_device(self, request: web.Request, match: re.Match[str]) -> web.Response:
        form = self._form(request)
        if isinstance(form, web.Response):
            return form
        mac = self._mac(match)
        with self.connect() as conn:
            try:
                store.delete_device(conn, mac or "")
            except ApiError:
                return web.text(404, "unknown-device")
        self._changed(request, f"device={mac} deleted")
        return web.redirect("/admin/")

    # Subscribers

    def _subscribers(self, request: web.Request, errors: list[FieldError] | None = None,
                     problem: str = "", values: dict[str, str] | None = None) -> web.Response:
        with self.connect() as conn:
            rows = store.recent_subscribers(conn, PICKER_SIZE)
        return self.render(request, "subscribers.html", subscribers=rows,
                           errors=errors or [], problem=problem, values=values or {})

    def subscribers(self, request: web.Request, match: re.Match[str]) -> web.Response:
        return self._subscribers(request)

    def create_subscriber(self, request: web.Request, match: re.Match[str]) -> web.Response:
        form = self._form(request)
        if isinstance(form, web.Response):
            return form
        body = {k: form.get(k, "") for k in ("username", "domain", "password")}
        with self.connect() as conn:
            try:
                created = store.create_subscriber(conn, validate.new_subscriber(body))
            except ApiError as exc:
                values = {"username": body["username"], "domain": body["domain"]}
                return self._subscribers(request, exc.errors, exc.detail, values)
        self._changed(request, f"subscriber={created['aor']} created")
        return web.redirect(f"/admin/subscribers#{created['aor']}")

    # CSV

    def import_page(self, request: web.Request, match: re.Match[str]) -> web.Response:
        return self.render(request, "import.html", text="", report=None, problem="",
                           columns=",".join(csv_import.COLUMNS))

    def import_csv(self, request: web.Request, match: re.Match[str]) -> web.Response:
        form = self._form(request, MAX_IMPORT_FORM_BYTES)
        if isinstance(form, web.Response):
            return form
        text = form.get("csv", "")
        dry_run = form.get("action") != "import"
        report, problem = None, ""
        with self.connect() as conn:
            try:
                report = csv_import.run(conn, text, dry_run)
            except ApiError as exc:
                problem = exc.detail
                report = {"dry_run": dry_run, "valid": False,
                          "errors": [e.as_dict() for e in exc.errors]}
        if not dry_run and report.get("valid"):
            self._changed(request, f"import rows={report['rows']}")
        by_row: dict[int, list[dict[str, Any]]] = {}
        for error in report["errors"]:
            by_row.setdefault(error.get("row") or 0, []).append(error)
        preview = _preview(text, by_row)
        return self.render(request, "import.html", text=text, report=report, problem=problem,
                           preview=preview, columns=",".join(csv_import.COLUMNS),
                           file_errors=by_row.get(0, []) + by_row.get(1, []))

    def export(self, request: web.Request, match: re.Match[str]) -> web.Response:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(csv_import.COLUMNS)
        with self.connect() as conn:
            # Never a password: the column is there so the file imports back as it is.
            for row in conn.execute(
                    "SELECT d.mac, d.vendor, d.model, l.line_no, s.username, s.domain, '',"
                    "       l.display_name"
                    "  FROM autoprov.device d"
                    "  JOIN autoprov.device_line l ON l.device_id = d.id"
                    "  JOIN subscriber s ON s.id = l.subscriber_id"
                    " ORDER BY d.mac, l.line_no"):
                writer.writerow([_cell(v) for v in row])
        return web.Response(200, out.getvalue().encode(), "text/csv; charset=utf-8",
                            [("Content-Disposition", 'attachment; filename="devices.csv"')])


def _cell(value: object) -> str:
    """A spreadsheet runs a cell starting with = + - @ as a formula: not ours."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _preview(text: str, by_row: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each data row of the file with its faults, for the table under the form."""
    rows = []
    for number, record in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        if number == 1 or not any(cell.strip() for cell in record):
            continue
        rows.append({"number": number, "cells": record, "errors": by_row.get(number, [])})
        if len(rows) >= 2000:
            break
    return rows
