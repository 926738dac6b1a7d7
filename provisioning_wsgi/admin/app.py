"""The operators' pages as a WSGI application (admin_port only).

  GET  /admin/                          every device and its state
  GET  /admin/devices/MAC               one device in full
  POST /admin/devices/MAC/resync        ask for a resync, wait a little for its outcome
  GET  /admin/bootstrap[?mac=MAC]       have this browser hand a phone its provisioning URL
  GET  /admin/api/fetches?mac=&after=   the device's config fetches after a fetch id (polled)
  GET  /admin/static/NAME               the pages' script and style
  ...  /admin/devices/new, .../edit, .../delete, /admin/subscribers, /admin/import,
       /admin/export.csv                  adding and changing the fleet (admin/fleet.py)
  GET  /healthz                         200 while the database answers, else 503 (no login)
  GET  /metrics                         Prometheus metrics (see docs/monitoring.md)
  *    /api/v1/...                        the REST API (provisioning_wsgi/api/, its own tokens)

Every answer but /healthz needs the admin credentials (/metrics: or the admin_metrics_token as
a Bearer token); with no admin_password configured every page is 404, and /metrics too unless
admin_metrics_token is set. /healthz is always there: it is the load balancer's. Its 200s are
not logged (a load balancer asks every few seconds), its 503s are.
Log lines have the provisioning service's fixed shape, for fail2ban:
  access client=ADDR port=admin method=M path=P status=N [reason=R]
  denied client=ADDR port=admin reason=R path=P
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable
from wsgiref.types import StartResponse, WSGIEnvironment

import psycopg

from autoprov import db, devices, resync
from autoprov.config import Settings
from autoprov.mac import InvalidMacError, normalize
from provisioning_wsgi import browser_push, metrics
from provisioning_wsgi.admin import auth, queries, web
from provisioning_wsgi.admin.fleet import FleetPages
from provisioning_wsgi.admin.links import BOOTSTRAP_PAGE
from provisioning_wsgi.admin.monitoring import Monitoring
from provisioning_wsgi.admin.pages import Pages, when
from provisioning_wsgi.api import app as api
from provisioning_wsgi.vendors import VENDORS

log = logging.getLogger("autoprov.provisioning")

CONNECT_TIMEOUT_S = 3
# How long the resync button waits for the phones' answers before showing the page; a page
# whose resync is still under way reloads itself every REFRESH_S.
RESYNC_WAIT_S = 8.0
REFRESH_S = 2
_SAFE_PATH = re.compile(r"^[A-Za-z0-9/._-]{0,120}$")
_REALM = 'Basic realm="autoprov operators", charset="UTF-8"'
_BEARER_REALM = 'Bearer realm="autoprov metrics"'
_ALLOW_GET = ("Allow", "GET, HEAD")

Conn = psycopg.Connection[tuple[object, ...]]
Handler = Callable[[web.Request, "re.Match[str]"], web.Response]


class _NotFoundError(LookupError):
    pass


def _loggable(path: str) -> str:
    return path if _SAFE_PATH.match(path) and path else urllib.parse.quote(path[:120], safe="")


def _mac(text: str) -> str:
    try:
        return normalize(text)
    except InvalidMacError:
        raise _NotFoundError from None


class AdminApp:
    def __init__(self, settings: Settings, shared: metrics.Shared, meter: metrics.Meter) -> None:
        """shared: every worker's request counters, for /metrics; meter: this port's, here."""
        self.settings = settings
        self.credentials = auth.Credentials(settings.admin_user, settings.admin_password) \
            if settings.admin_password else None
        self.metrics_token = auth.BearerToken(settings.admin_metrics_token) \
            if settings.admin_metrics_token else None
        self.monitoring = Monitoring(settings, shared)
        self.meter = meter
        self.pages = Pages()
        # Its own credentials (tokens), so on whether or not admin_password is set.
        self.api = api.ApiApp(self._connect, self._deny)
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("GET", re.compile(r"^/$"), lambda req, m: web.redirect("/admin/")),
            ("GET", re.compile(r"^/admin/$"), self.device_list),
            ("GET", re.compile(r"^/admin/devices/(?P<mac>[^/]+)$"), self.device_page),
            ("POST", re.compile(r"^/admin/devices/(?P<mac>[^/]+)/resync$"), self.resync),
            ("GET", re.compile(rf"^{BOOTSTRAP_PAGE}$"), self.bootstrap_page),
            ("GET", re.compile(r"^/admin/api/fetches$"), self.fetches),
            ("GET", re.compile(r"^/admin/static/(?P<name>[a-z.]+)$"), self.static),
        ]
        # Adding, changing and deleting devices and subscribers, CSV import and export; first,
        # so /admin/devices/new is not taken for a MAC.
        self.routes = FleetPages(self._connect, self._page, self._deny).routes + self.routes

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        request = web.Request.from_environ(environ)
        try:
            response = self._handle(request)
        except Exception:
            log.exception("error client=%s port=admin path=%s", request.client,
                          _loggable(request.path))
            response = web.text(500, "internal-error")
        self.meter.record(response.status, time.perf_counter() - started)
        if response.status != 200 or request.path != "/healthz":
            extra = f" reason={response.reason}" if response.reason else ""
            log.info("access client=%s port=admin method=%s path=%s status=%d%s",
                     request.client, _loggable(request.method), _loggable(request.path),
                     response.status, extra)
        return response.send(start_response, request.method)

    def _deny(self, request: web.Request, reason: str, response: web.Response) -> web.Response:
        # Never the user name: people type their password into it by mistake.
        log.warning("denied client=%s port=admin reason=%s path=%s", request.client, reason,
                    _loggable(request.path))
        response.reason = reason
        return response

    def _refuse(self, request: web.Request, verdict: auth.Verdict,
                *realms: str) -> web.Response:
        challenge = web.text(401, verdict.value, *(("WWW-Authenticate", r) for r in realms))
        if verdict is auth.Verdict.WRONG:
            return self._deny(request, verdict.value, challenge)
        return challenge

    def _handle(self, request: web.Request) -> web.Response:
        if request.path == "/healthz":
            if request.method not in ("GET", "HEAD"):
                return web.text(405, "method", _ALLOW_GET)
            return self.monitoring.healthz()
        if request.path == "/metrics":
            return self._metrics(request)
        if request.path.startswith(api.PREFIX + "/"):
            return self.api.handle(request)
        if self.credentials is None:
            return web.text(404, "admin-off")
        verdict = self.credentials.check(request.header("Authorization"))
        if verdict is not auth.Verdict.OK:
            return self._refuse(request, verdict, _REALM)
        method = "GET" if request.method == "HEAD" else request.method
        allowed = []
        for route_method, pattern, handler in self.routes:
            match = pattern.match(request.path)
            if match is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            try:
                return handler(request, match)
            except _NotFoundError:
                return web.text(404, "unknown-device")
            except psycopg.Error as exc:
                log.error("database unavailable: %s", str(exc).strip())
                return web.text(503, "database-unavailable", ("Retry-After", "10"))
        if allowed:
            return web.text(405, "method", ("Allow", ", ".join(allowed)))
        return web.text(404, "unknown-path")

    def _metrics(self, request: web.Request) -> web.Response:
        logins = [c for c in (self.credentials, self.metrics_token) if c is not None]
        if not logins:
            return web.text(404, "admin-off")
        verdict = auth.either(request.header("Authorization"), *logins)
        if verdict is not auth.Verdict.OK:
            return self._refuse(request, verdict,
                                *[_REALM if isinstance(c, auth.Credentials) else _BEARER_REALM
                                  for c in logins])
        if request.method not in ("GET", "HEAD"):
            return web.text(405, "method", _ALLOW_GET)
        return self.monitoring.metrics()

    def _connect(self) -> Conn:
        return psycopg.connect(db.url(self.settings), connect_timeout=CONNECT_TIMEOUT_S,
                               application_name="autoprov-admin")

    def _page(self, request: web.Request, template: str, csp: str = web.CSP,
              refresh: int | None = None, **context: object) -> web.Response:
        """An HTML page whose forms carry this browser's CSRF token (set now if it has none)."""
        token = auth.cookie_token(request.header("Cookie"))
        headers = []
        if token is None:
            token = auth.new_token()
            headers.append(auth.set_cookie(token))
        body = self.pages.render(template, csrf=token, user=self.settings.admin_user,
                                 browser_vendors=_browser_vendors(), refresh=refresh,
                                 **context)
        return web.html(body, *headers, csp=csp)

    # The pages

    def device_list(self, request: web.Request, match: re.Match[str]) -> web.Response:
        with self._connect() as conn:
            rows = queries.device_rows(conn)
        return self._page(request, "devices.html", devices=rows)

    def device_page(self, request: web.Request, match: re.Match[str]) -> web.Response:
        mac = _mac(match["mac"])
        with self._connect() as conn:
            try:
                info = devices.show(conn, mac)
            except devices.DeviceError:
                raise _NotFoundError from None
        last = info["resync"]
        refresh = REFRESH_S if last is not None and not resync.settled(last) else None
        return self._page(request, "device.html", device=info, refresh=refresh)

    def resync(self, request: web.Request, match: re.Match[str]) -> web.Response:
        mac = _mac(match["mac"])
        form = auth.posted_form(request, self._deny)
        if isinstance(form, web.Response):
            return form
        with self._connect() as conn:
            try:
                request_id = resync.request(conn, mac, reason="admin-page")
            except resync.NoSuchDeviceError:
                raise _NotFoundError from None
            log.info("resync client=%s port=admin device=%s request=%d", request.client, mac,
                     request_id)
            resync.wait(conn, request_id, RESYNC_WAIT_S)
        return web.redirect(f"/admin/devices/{mac}#resync")

    def bootstrap_page(self, request: web.Request, match: re.Match[str]) -> web.Response:
        vendors = _browser_vendors()
        problem = ""
        device = push = None
        after = 0
        with self._connect() as conn:
            choices = queries.devices_of_vendors(conn, vendors)
            if request.query.get("mac"):
                try:
                    mac = normalize(request.query["mac"])
                except InvalidMacError:
                    problem = "That is not a MAC address."
                else:
                    device = queries.find_device(conn, mac)
                    if device is None:
                        problem = f"There is no device {mac}."
                    elif device["vendor"] not in vendors:
                        problem = (f"A {device['vendor']} phone is not bootstrapped from a "
                                   "browser: it gets its provisioning URL from its vendor's "
                                   "redirect service.")
                        device = None
                    else:
                        after = queries.last_fetch_id(conn, mac)
        csp = web.CSP
        if device is not None:
            try:
                push = browser_push.load(self.settings, device["vendor"], device["model"],
                                         device["mac"])
            except browser_push.BrowserPushError as exc:
                log.error("%s", exc)
                problem = "This model's browser bootstrap data is broken; see the service log."
            if push is not None and push.method == "POST":
                # The form goes to the phone's own web interface.
                csp = csp.replace("form-action 'self'", "form-action 'self' http: https:")
        return self._page(request, "bootstrap.html", csp=csp, choices=choices, device=device,
                          push=push, fields=json.dumps(push.fields) if push else "[]",
                          after=after, problem=problem)

    def fetches(self, request: web.Request, match: re.Match[str]) -> web.Response:
        try:
            mac = normalize(request.query.get("mac", ""))
            after = int(request.query.get("after", "0"))
        except (InvalidMacError, ValueError):
            return web.as_json({"error": "mac and after (a fetch id) are required"}, 400)
        with self._connect() as conn:
            if queries.find_device(conn, mac) is None:
                return web.as_json({"error": f"no device {mac}"}, 404)
            rows = queries.fetches_after(conn, mac, max(after, 0))
        for row in rows:
            row["when"] = when(row["fetched_at"])
        return web.as_json({"mac": mac, "fetches": rows})

    def static(self, request: web.Request, match: re.Match[str]) -> web.Response:
        found = self.pages.static(match["name"])
        if found is None:
            return web.text(404, "unknown-path")
        body, content_type = found
        return web.Response(200, body, content_type)


def _browser_vendors() -> list[str]:
    return sorted(name for name, vendor in VENDORS.items() if vendor.browser_bootstrap)
