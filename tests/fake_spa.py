"""A Cisco SPA's web interface, as much of it as the browser bootstrap uses.

`GET /admin/resync?PROFILE-URL` (or a POST whose form names the URL) answers at once, as the
phone does, then fetches the profile: `$MA` replaced by its MAC, over TLS with its client
certificate, exactly as a phone would. It records each call and each fetch.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

import requests


@dataclass
class Call:
    method: str
    path: str
    query: str
    form: dict[str, list[str]]


@dataclass
class FakeSpa:
    mac: str
    cert: tuple[Path, Path]
    ca: Path
    calls: list[Call] = field(default_factory=list)
    # (URL fetched, HTTP status)
    fetched: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        spa = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._resync("")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._resync(self.rfile.read(length).decode("ascii", "replace"))

            def _resync(self, body: str) -> None:
                parts = urllib.parse.urlsplit(self.path)
                form = urllib.parse.parse_qs(body, keep_blank_values=True)
                spa.calls.append(Call(self.command, parts.path, parts.query, form))
                if parts.path != "/admin/resync":
                    self._answer(404, "not found")
                    return
                candidates = [parts.query, *form, *(v for vs in form.values() for v in vs)]
                profile = next((c for c in candidates if c.startswith("http")), None)
                if profile is None:
                    self._answer(400, "no profile URL")
                    return
                self._answer(200, "Resync request accepted")
                threading.Thread(target=spa.fetch, args=(profile,), daemon=True).start()

            def _answer(self, status: int, text: str) -> None:
                body = f"<html><body>{text}</body></html>".encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def fetch(self, profile: str) -> None:
        url = profile.replace("$MA", self.mac)
        session = requests.Session()
        session.trust_env = False
        reply = session.get(url, cert=(str(self.cert[0]), str(self.cert[1])),
                            verify=str(self.ca), timeout=10)
        self.fetched.append((url, reply.status_code))

    def wait_for_fetch(self, timeout: float = 10) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while not self.fetched and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.fetched, f"the phone fetched nothing; calls: {self.calls}"
        return self.fetched[0]

    def __enter__(self) -> FakeSpa:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
