"""HTTP plumbing of the operators' pages: requests, responses, headers every answer carries."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

REASONS = {200: "OK", 303: "See Other", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           413: "Content Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}
# A form is a token and maybe a few fields; anything bigger is not from our pages.
MAX_FORM_BYTES = 8192

# No inline script or style anywhere, nothing from elsewhere, never inside a frame.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_SECURITY_HEADERS = [
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    # The phone's web interface is opened from these pages: it learns nothing of them. (Not
    # no-referrer: browsers then send "Origin: null" with our own forms.)
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    # Device states and tokens: never kept by a browser or a proxy.
    ("Cache-Control", "no-store"),
]


@dataclass
class Request:
    method: str
    path: str
    client: str
    query: dict[str, str]
    environ: WSGIEnvironment

    @classmethod
    def from_environ(cls, environ: WSGIEnvironment) -> Request:
        query = urllib.parse.parse_qs(str(environ.get("QUERY_STRING", "")))
        return cls(str(environ.get("REQUEST_METHOD", "GET")), str(environ.get("PATH_INFO", "")),
                   str(environ.get("REMOTE_ADDR", "-")),
                   {k: v[0] for k, v in query.items()}, environ)

    def header(self, name: str) -> str | None:
        value = self.environ.get("HTTP_" + name.upper().replace("-", "_"))
        return str(value) if value is not None else None

    def form(self, limit: int = MAX_FORM_BYTES) -> dict[str, str] | None:
        """The urlencoded body; None if it is larger than limit or not a form."""
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        if length > limit:
            return None
        body = self.environ["wsgi.input"].read(length) if length > 0 else b""
        try:
            fields = urllib.parse.parse_qs(body.decode("ascii"), strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            return None
        return {k: v[0] for k, v in fields.items()}


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    csp: str = CSP
    # For the access log only.
    reason: str = ""

    def send(self, start_response: StartResponse, method: str) -> Iterable[bytes]:
        headers = [("Content-Type", self.content_type),
                   ("Content-Length", str(len(self.body))),
                   ("Content-Security-Policy", self.csp), *_SECURITY_HEADERS, *self.headers]
        reason = REASONS.get(self.status) or HTTPStatus(self.status).phrase
        start_response(f"{self.status} {reason}", headers)
        return [] if method == "HEAD" else [self.body]


def text(status: int, reason: str = "", *headers: tuple[str, str]) -> Response:
    # The same short body whatever went wrong, as on the phones' ports.
    body = f"{status} {REASONS[status].lower()}\n".encode()
    return Response(status, body, headers=list(headers), reason=reason)


def html(body: str, *headers: tuple[str, str], csp: str = CSP) -> Response:
    return Response(200, body.encode(), "text/html; charset=utf-8", list(headers), csp)


def as_json(value: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(value).encode(), "application/json")


def redirect(location: str) -> Response:
    return Response(303, b"", headers=[("Location", location)])
