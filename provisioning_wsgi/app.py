"""The WSGI application: one instance per port.

bootstrap (plain HTTP): anyone may fetch the device-generic files; nothing secret is rendered.
tls (HTTPS): the TLS layer has verified the phone's client certificate; a device's file is served
only if that certificate's subject names the device's MAC.

Log lines have a fixed shape for fail2ban, with the client address and never a secret:
  access client=ADDR port=PORT method=M file=F status=N [reason=R] [device=MAC version=V]
  denied client=ADDR port=PORT reason=R file=F
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, cast
from wsgiref.types import StartResponse, WSGIEnvironment

import psycopg

from provisioning_wsgi import identity, logsink, metrics, store, vendors
from provisioning_wsgi.cache import ConfigCache, FetchWriter
from provisioning_wsgi.render import (
    BOOTSTRAP_PATH,
    CONFIG_PATH,
    Device,
    Line,
    Rendered,
    Renderer,
    RenderError,
)
from provisioning_wsgi.vendors.base import Requested

Port = Literal["tls", "bootstrap"]
log = logging.getLogger("autoprov.provisioning")

_REASONS = {200: "OK", 304: "Not Modified", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 500: "Internal Server Error",
            503: "Service Unavailable"}
_RETRY_AFTER_S = "10"


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    # For the access log only.
    reason: str = ""
    device: Device | None = None
    version: str = ""
    # The device a cached 404 is about, so that a change to it drops the 404.
    device_id: int | None = None


def _text(status: int, reason: str, *headers: tuple[str, str]) -> Response:
    # The same short body whatever went wrong, so a 404 never tells which part was wrong.
    body = f"{status} {_REASONS[status].lower()}\n".encode()
    return Response(status, body, [("Content-Type", "text/plain; charset=utf-8"), *headers],
                    reason)


def _loggable(file: str) -> str:
    if not file:
        return "-"
    if vendors.SAFE_FILE.match(file):
        return file
    return urllib.parse.quote(file[:80], safe="")


def _answer(rendered: Rendered, if_none_match: str | None, device: Device | None) -> Response:
    headers = [("ETag", rendered.etag), ("Cache-Control", "no-cache")]
    if _etag_matches(if_none_match, rendered.etag):
        return Response(304, b"", headers, device=device, version=rendered.version)
    return Response(200, rendered.body, [("Content-Type", rendered.content_type), *headers],
                    device=device, version=rendered.version)


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


UNKNOWN_DEVICE = "unknown-device"


class ProvisioningApp:
    def __init__(self, port: Port, renderer: Renderer, db: store.Store, cache: ConfigCache,
                 writer: FetchWriter, meter: metrics.Meter) -> None:
        """cache: rendered configs kept in memory; writer: fetches recorded in the background;
        meter: this port's request counters and latencies, for /metrics."""
        self.port = port
        self.meter = meter
        self.prefix = CONFIG_PATH if port == "tls" else BOOTSTRAP_PATH
        self.renderer = renderer
        self.store = db
        self.cache = cache
        self.writer = writer

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()  # vDSO, not a system call
        method = str(environ.get("REQUEST_METHOD", "GET"))
        path = str(environ.get("PATH_INFO", ""))
        client = str(environ.get("REMOTE_ADDR", "-"))
        file = path[len(self.prefix):] if path.startswith(self.prefix) else path
        try:
            response = self._handle(environ, method, path, file, client)
        except Exception:
            log.exception("error client=%s port=%s file=%s", client, self.port, _loggable(file))
            response = _text(500, "internal-error")
        self._log_access(client, method, file, response)
        self.meter.record(response.status, time.perf_counter() - started)
        headers = response.headers
        if response.status != 304:
            headers = [*headers, ("Content-Length", str(len(response.body)))]
        start_response(f"{response.status} {_REASONS[response.status]}", headers)
        return [] if method == "HEAD" or response.status == 304 else [response.body]

    def _log_access(self, client: str, method: str, file: str, response: Response) -> None:
        extra = f" reason={response.reason}" if response.reason else ""
        if response.device is not None:
            extra += f" device={response.device.mac} version={response.version}"
        logsink.access(log, f"access client={client} port={self.port} method="
                            f"{_loggable(method)} file={_loggable(file)} "
                            f"status={response.status}{extra}")

    def _deny(self, client: str, reason: str, file: str) -> Response:
        log.warning("denied client=%s port=%s reason=%s file=%s", client, self.port, reason,
                    _loggable(file))
        return _text(403, reason)

    def _handle(self, environ: WSGIEnvironment, method: str, path: str, file: str,
                client: str) -> Response:
        if not path.startswith(self.prefix):
            return _text(404, "unknown-path")
        if method not in ("GET", "HEAD"):
            return _text(405, "method", ("Allow", "GET, HEAD"))
        requested = vendors.parse(file)
        if requested is None:
            return _text(404, "malformed-name")
        if self.port == "tls":
            subject = environ.get(identity.SUBJECT_VALUES)
            if environ.get("SSL_CLIENT_VERIFY") != "SUCCESS" or not isinstance(subject, tuple):
                return self._deny(client, "no-verified-certificate", file)
            if requested.mac is not None and not identity.subject_names_mac(subject, requested.mac):
                return self._deny(client, "certificate-names-another-device", file)
        if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        try:
            if requested.mac is None:  # a common file: no device, no database needed
                return _answer(self._render_common_file(requested), if_none_match, None)
            found = self._cached_device_file(requested, file)
            if isinstance(found, Response):
                if found.reason == UNKNOWN_DEVICE and method == "GET":
                    self.writer.note_unknown(requested.vendor.name, requested.mac,
                                             environ.get("HTTP_USER_AGENT"), client)
                return _text(found.status, found.reason)  # a fresh copy: callers add headers
            rendered, device, snapshot = found
            if method == "GET":
                self.writer.record(device.id, self.port, file, rendered.version, client,
                                   environ.get("HTTP_USER_AGENT"), snapshot)
            return _answer(rendered, if_none_match, device)
        except store.DatabaseUnavailableError as exc:
            log.error("database unavailable: %s", exc)
            return _text(503, "database-unavailable", ("Retry-After", _RETRY_AFTER_S))
        except RenderError as exc:
            log.error("%s", exc)
            return _text(500, "template-error")
        except psycopg.Error as exc:
            log.error("database error: %s", str(exc).strip())
            return _text(503, "database-error", ("Retry-After", _RETRY_AFTER_S))

    def _render_common_file(self, requested: Requested) -> Rendered:
        if self.port == "tls":
            return self.renderer.config(requested, None, [])
        return self.renderer.bootstrap(requested, None)

    def _cached_device_file(self, requested: Requested,
                            file: str) -> tuple[Rendered, Device, str] | Response:
        """`_render_device_file`, from the cache when it holds the answer."""
        assert requested.mac is not None
        key = (self.port, requested.mac, file)
        cached = self.cache.get(key)
        if cached is not None:
            return cast("tuple[Rendered, Device, str] | Response", cached)
        epoch = self.cache.epoch()
        # One statement reads the device and its lines: no transaction around it needed.
        found = self.store.run(lambda conn: self._render_device_file(conn, requested),
                               transaction=False)
        device_id = found[1].id if isinstance(found, tuple) else found.device_id
        self.cache.put(key, device_id, found, epoch)
        return found

    def _render_device_file(self, conn: store.Conn,
                            requested: Requested) -> tuple[Rendered, Device, str] | Response:
        """What to serve to which device, and the snapshot it was read in."""
        assert requested.mac is not None
        lines: list[Line] = []
        if self.port == "tls":
            with_lines = store.find_device_with_lines(conn, requested.mac)
            found = (with_lines[0], with_lines[2]) if with_lines else None
            lines = with_lines[1] if with_lines else []
        else:
            # The plain port never even reads a line or a password.
            found = store.find_device(conn, requested.mac)
        if found is None:
            return _text(404, UNKNOWN_DEVICE)
        device, snapshot = found
        if device.vendor != requested.vendor.name:
            # A name several vendors' phones ask for (<mac>.cfg): the device's vendor decides.
            own = vendors.parse_as(vendors.VENDORS[device.vendor], requested.file) \
                if device.vendor in vendors.VENDORS else None
            if own is None or own.mac != requested.mac:
                wrong = _text(404, "another-vendors-file")
                wrong.device_id = device.id  # for the cache, not the access log
                return wrong
            requested = own
        if self.port == "tls":
            return self.renderer.config(requested, device, lines), device, snapshot
        return self.renderer.bootstrap(requested, device), device, snapshot
