"""The REST API as a part of the admin port's WSGI app: everything under /api/v1/.

Its own credential is a bearer token (autoprov/tokens.py), so it is on whether or not the
operators' pages are (admin_password). It takes no cookie and no Basic login: a browser cannot
be made to send a token, so no page elsewhere can make it write, and it needs no CSRF token.
Answers are JSON, errors application/problem+json; the OpenAPI document (no token needed) says
which. Writes are logged with the token's name, never the token:
  api client=ADDR port=admin token=NAME method=M path=P status=N
Unknown or revoked tokens are refused in the admin port's fail2ban shape (AdminApp._deny).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from autoprov import resync, tokens
from autoprov.mac import InvalidMacError, normalize
from autoprov.redirect import jobs as redirect_jobs
from autoprov.redirect import state as redirect_state
from provisioning_wsgi.admin import web
from provisioning_wsgi.api import csv_import, openapi, store, validate
from provisioning_wsgi.api.problem import ApiError, FieldError, conflict, not_found

log = logging.getLogger("autoprov.provisioning")

PREFIX = "/api/v1"
MAX_JSON_BYTES = 64 * 1024
# 5,000 rows of a spreadsheet are about 400 kB.
MAX_CSV_BYTES = 4 * 1024 * 1024
MAX_WAIT_S = openapi.MAX_WAIT_S
# Requests waiting for a resync's outcome at once, per worker process: each holds one of its
# few admin threads (server.ADMIN_THREADS), and /healthz and the pages need the others. A wait
# beyond these answers the state at once; the client asks again.
_WAITERS = threading.BoundedSemaphore(2)
MAX_LIMIT = 1000
_REALM = 'Bearer realm="autoprov api"'
_READS = ("GET", "HEAD")

Conn = psycopg.Connection[Any]
Deny = Callable[[web.Request, str, web.Response], web.Response]


@dataclass
class Call:
    """One request as a handler sees it."""
    request: web.Request
    match: re.Match[str]
    conn: Conn

    def mac(self) -> str:
        try:
            return normalize(self.match["mac"])
        except InvalidMacError:
            raise not_found(f"no device {self.match['mac']!r}: not a MAC address") from None

    def aor(self) -> tuple[str, str]:
        parts = validate.split_aor(self.match["aor"])
        if parts is None:
            raise not_found(f"no subscriber {self.match['aor']!r}: expected USER@DOMAIN")
        return parts

    def body(self, content_type: str, limit: int) -> bytes:
        given = (self.request.header("Content-Type") or
                 str(self.request.environ.get("CONTENT_TYPE", ""))).split(";")[0].strip()
        if given.lower() != content_type:
            raise ApiError(415, "unsupported-media-type", f"send {content_type}")
        try:
            length = int(self.request.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > limit:
            raise ApiError(413, "body-too-large", f"at most {limit} bytes")
        data: bytes = self.request.environ["wsgi.input"].read(length) if length else b""
        return data

    def json(self) -> Any:
        try:
            return json.loads(self.body("application/json", MAX_JSON_BYTES))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, "malformed-json", f"the body is not JSON: {exc}") from None

    def query_int(self, name: str, default: int, low: int, high: int) -> int:
        text = self.request.query.get(name)
        if text is None:
            return default
        if not text.isdigit() or not low <= int(text) <= high:
            raise ApiError(400, "invalid-query", f"{name}: a whole number from {low} to {high}",
                          [FieldError(name, f"a whole number from {low} to {high}")])
        return int(text)

    def query_bool(self, name: str) -> bool | None:
        text = self.request.query.get(name)
        if text is None:
            return None
        if text.lower() not in ("true", "false", "1", "0"):
            raise ApiError(400, "invalid-query", f"{name}: true or false",
                          [FieldError(name, "true or false")])
        return text.lower() in ("true", "1")


Handler = Callable[[Call], web.Response]


def _default(value: object) -> str:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def answer(value: Any, status: int = 200, *headers: tuple[str, str]) -> web.Response:
    return web.Response(status, json.dumps(value, default=_default).encode(),
                        "application/json", list(headers))


def _page(items: list[dict[str, Any]], cursor: str | None) -> dict[str, Any]:
    return {"items": items, "next_cursor": cursor}


class ApiApp:
    def __init__(self, connect: Callable[[], Conn], deny: Deny) -> None:
        """connect: a new database connection; deny: the admin port's refusal, logged for
        fail2ban."""
        self.connect = connect
        self.deny = deny
        mac, aor = r"(?P<mac>[^/]+)", r"(?P<aor>[^/]+)"
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = [
            (method, re.compile(f"^{PREFIX}{path}$"), handler) for method, path, handler in (
                ("GET", "/subscribers", self.subscribers),
                ("POST", "/subscribers", self.subscriber_create),
                ("GET", f"/subscribers/{aor}", self.subscriber),
                ("PATCH", f"/subscribers/{aor}", self.subscriber_password),
                ("DELETE", f"/subscribers/{aor}", self.subscriber_delete),
                ("GET", "/devices", self.devices),
                ("POST", "/devices", self.device_create),
                ("POST", "/devices/import", self.device_import),
                ("GET", f"/devices/{mac}", self.device),
                ("PATCH", f"/devices/{mac}", self.device_change),
                ("DELETE", f"/devices/{mac}", self.device_delete),
                ("POST", f"/devices/{mac}/resync", self.resync_request),
                ("GET", r"/resync/(?P<id>[0-9]{1,18})", self.resync_status),
                ("GET", f"/devices/{mac}/fetches", self.fetches),
                ("GET", f"/devices/{mac}/redirect", self.redirect),
                ("POST", f"/devices/{mac}/redirect/retry", self.redirect_retry),
                ("GET", "/vendors", self.vendors),
            )]

    def handle(self, request: web.Request) -> web.Response:
        try:
            return self._handle(request)
        except ApiError as problem:
            return problem.response()
        except psycopg.OperationalError as exc:
            log.error("database unavailable: %s", str(exc).strip())
            return ApiError(503, "database-unavailable", "the database does not answer",
                           headers=[("Retry-After", "10")]).response()

    def _handle(self, request: web.Request) -> web.Response:
        method = "GET" if request.method == "HEAD" else request.method
        if request.path == f"{PREFIX}/openapi.json":
            if method != "GET":
                raise ApiError(405, "method", "GET only", headers=[("Allow", "GET, HEAD")])
            return answer(openapi.DOCUMENT)
        scheme, _, token = (request.header("Authorization") or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "no-credentials", "send Authorization: Bearer TOKEN "
                          "(`autoprov token create NAME` makes one)",
                          headers=[("WWW-Authenticate", _REALM)])
        with self.connect() as conn:
            holder = tokens.holder(conn, token.strip())
            conn.commit()
            if holder is None:
                refused = ApiError(401, "wrong-credentials", "unknown or revoked token", headers=[
                    ("WWW-Authenticate", _REALM + ', error="invalid_token"')]).response()
                return self.deny(request, "wrong-credentials", refused)
            response = self._route(request, method, holder, conn)
        if method not in _READS:
            log.info("api client=%s port=admin token=%s method=%s path=%s status=%d",
                     request.client, holder.name, method, _loggable(request.path),
                     response.status)
        return response

    def _route(self, request: web.Request, method: str, holder: tokens.Holder,
               conn: Conn) -> web.Response:
        allowed = []
        for route_method, pattern, handler in self.routes:
            match = pattern.match(request.path)
            if match is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            if holder.read_only and method not in _READS:
                raise ApiError(403, "read-only-token",
                              f"token {holder.name} is read-only: it cannot {method}")
            try:
                return handler(Call(request, match, conn))
            except ApiError:
                conn.rollback()
                raise
        if allowed:
            raise ApiError(405, "method", f"this path takes {', '.join(allowed)}",
                          headers=[("Allow", ", ".join(allowed))])
        raise not_found(f"no such path: {request.path[:120]}")

    # Subscribers

    def subscribers(self, call: Call) -> web.Response:
        after = call.query_int("cursor", 0, 0, 2**31)
        items, last = store.list_subscribers(call.conn, call.request.query.get("domain"),
                                             after, call.query_int("limit", 100, 1, MAX_LIMIT))
        return answer(_page(items, str(last) if last is not None else None))

    def subscriber_create(self, call: Call) -> web.Response:
        new = validate.new_subscriber(call.json())
        created = store.create_subscriber(call.conn, new)
        return answer(created, 201, ("Location", f"{PREFIX}/subscribers/{created['aor']}"))

    def subscriber(self, call: Call) -> web.Response:
        return answer(store.show_subscriber(call.conn, *call.aor()))

    def subscriber_password(self, call: Call) -> web.Response:
        username, domain = call.aor()
        store.set_password(call.conn, username, domain, validate.new_password(call.json()))
        return answer(store.show_subscriber(call.conn, username, domain))

    def subscriber_delete(self, call: Call) -> web.Response:
        store.delete_subscriber(call.conn, *call.aor())
        return web.Response(204, b"", "application/json")

    # Devices

    def devices(self, call: Call) -> web.Response:
        cursor = call.request.query.get("cursor", "")
        if cursor and not re.fullmatch(r"[0-9a-f]{12}", cursor):
            raise ApiError(400, "invalid-query", "cursor: the next_cursor of a previous page",
                          [FieldError("cursor", "the next_cursor of a previous page")])
        query = call.request.query
        items, last = store.list_devices(call.conn, query.get("vendor"), query.get("model"),
                                         call.query_bool("registered"), cursor,
                                         call.query_int("limit", 100, 1, MAX_LIMIT))
        return answer(_page(items, last))

    def device_create(self, call: Call) -> web.Response:
        created = store.create_device(call.conn, validate.new_device(call.json()))
        return answer(created, 201, ("Location", f"{PREFIX}/devices/{created['mac']}"))

    def device(self, call: Call) -> web.Response:
        return answer(store.show_device(call.conn, call.mac()))

    def device_change(self, call: Call) -> web.Response:
        mac = call.mac()
        return answer(store.change_device(call.conn, mac, validate.device_change(call.json())))

    def device_delete(self, call: Call) -> web.Response:
        store.delete_device(call.conn, call.mac())
        return web.Response(204, b"", "application/json")

    def device_import(self, call: Call) -> web.Response:
        try:
            text = call.body("text/csv", MAX_CSV_BYTES).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ApiError(400, "malformed-csv", "the file is not UTF-8") from None
        dry_run = call.query_bool("dry_run") or False
        report = csv_import.run(call.conn, text, dry_run)
        return answer(report, 200 if dry_run else 201)

    # Resync, fetches, redirect, vendors

    def resync_request(self, call: Call) -> web.Response:
        mac = call.mac()
        try:
            request_id = resync.request(call.conn, mac, reason="api")
        except resync.NoSuchDeviceError:
            raise not_found(f"no device {mac}") from None
        where = f"{PREFIX}/resync/{request_id}"
        return answer({"request_id": request_id, "mac": mac, "status_url": where}, 202,
                      ("Location", where))

    def resync_status(self, call: Call) -> web.Response:
        request_id = int(call.match["id"])
        text = call.request.query.get("wait", "0")
        try:
            seconds = float(text)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= MAX_WAIT_S:
            raise ApiError(400, "invalid-query", f"wait: seconds from 0 to {MAX_WAIT_S:.0f}",
                          [FieldError("wait", f"seconds from 0 to {MAX_WAIT_S:.0f}")])
        try:
            if seconds and _WAITERS.acquire(blocking=False):
                try:
                    info = resync.wait(call.conn, request_id, seconds)
                finally:
                    _WAITERS.release()
            else:
                info = resync.status(call.conn, request_id)
        except LookupError:
            raise not_found(f"no resync request {request_id}") from None
        return answer({**info, "settled": resync.settled(info),
                       "succeeded": resync.succeeded(info)})

    def fetches(self, call: Call) -> web.Response:
        mac = call.mac()
        rows = store.fetches(call.conn, mac, call.query_int("limit", 20, 1, MAX_LIMIT))
        return answer({"mac": mac, "fetches": rows})

    def redirect(self, call: Call) -> web.Response:
        mac = call.mac()
        store.show_device(call.conn, mac)
        return answer({"mac": mac, **redirect_state.fragment(call.conn, mac)})

    def redirect_retry(self, call: Call) -> web.Response:
        mac = call.mac()
        store.show_device(call.conn, mac)
        try:
            job_id = redirect_jobs.retry(call.conn, mac)
        except redirect_jobs.RedirectError as exc:
            raise conflict(str(exc)) from None
        return answer({"mac": mac, "job_id": job_id}, 202)

    def vendors(self, call: Call) -> web.Response:
        return answer({"items": store.vendors(call.conn)})


_SAFE_PATH = re.compile(r"^[A-Za-z0-9/._@-]{0,200}$")


def _loggable(path: str) -> str:
    return path if _SAFE_PATH.match(path) else "-unprintable-"



