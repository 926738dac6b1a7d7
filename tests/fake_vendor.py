"""Yealink RPS, Panasonic RCS and Snom SRAPS as a real local HTTPS XML-RPC server, for tests.

One server, two paths (as the real endpoints: Yealink ``/xmlrpc``, Panasonic
``/redirect/xmlrpc``), Basic auth, TLS with a certificate signed by a CA made here, and state:
which MACs are registered where. Answers use each vendor's forms (vendor-protocols.md §4):
Yealink ``[bool, "message"]`` arrays, Panasonic booleans, structs and faults. Tests can
script the next answers: an HTTP 500, malformed XML or a slow reply.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import re
import socket
import ssl
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

YEALINK_PATH = "/xmlrpc"
PANASONIC_PATH = "/redirect/xmlrpc"
SNOM_PATH = "/xmlrpc/"  # SRAPS: the trailing slash is part of it
# Each service only knows its own vendor's phones (by OUI); anything else is an invalid MAC.
YEALINK_OUIS = ("001565", "805EC0", "249AD8", "44DBD2")
PANASONIC_OUIS = ("0080F0", "08F0C0", "BCC342")
SNOM_OUIS = ("000413",)
# RPS accepts these spellings (per the identical Htek/Akuvox API docs).
_YEALINK_MAC = re.compile(r"^[0-9A-Fa-f]{2}([ :-]?)[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}$")
_PANASONIC_MAC = re.compile(r"^[0-9A-F]{12}$")
FAILURES = ("http500", "malformed", "slow")


@dataclass(frozen=True)
class Call:
    vendor: str
    method: str
    params: tuple[Any, ...]
    # What the client got: "ok", "error" (a vendor error answer), or a scripted failure.
    answer: str


@dataclass
class Tls:
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_tls(directory: Path, name: str = "fake-vendor") -> Tls:
    """A CA and a server certificate for localhost/127.0.0.1 signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    tls = Tls(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    tls.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return tls


@dataclass
class FakeVendor:
    tls: Tls
    user: str = "rps-account"
    password: str = "rps-s3cret-Pw"
    slow_seconds: float = 2.0
    # Added to every answer: a vendor that takes a moment, so concurrent workers overlap.
    delay_seconds: float = 0.0
    # Yealink: server name -> URL, MAC (upper hex) -> server name.
    yealink_servers: dict[str, str] = field(default_factory=dict)
    yealink_devices: dict[str, str] = field(default_factory=dict)
    # Panasonic: MAC -> URL.
    panasonic_phones: dict[str, str] = field(default_factory=dict)
    # Snom SRAPS: MAC -> URL.
    snom_phones: dict[str, str] = field(default_factory=dict)
    # MACs that another account holds, at either service.
    foreign: set[str] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)
    # Requests received so far (also those still being answered), per vendor.
    received: dict[str, int] = field(default_factory=dict)
    port: int = 0
    _script: dict[str, list[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def yealink_url(self) -> str:
        return f"https://localhost:{self.port}{YEALINK_PATH}"

    @property
    def panasonic_url(self) -> str:
        return f"https://localhost:{self.port}{PANASONIC_PATH}"

    @property
    def snom_url(self) -> str:
        return f"https://localhost:{self.port}{SNOM_PATH}"

    def fail_next(self, vendor: str, failure: str, times: int = 1) -> None:
        """The next ``times`` requests to ``vendor`` get ``failure`` (one of FAILURES)."""
        assert failure in FAILURES
        with self._lock:
            self._script.setdefault(vendor, []).extend([failure] * times)

    def clear_failures(self) -> None:
        with self._lock:
            self._script.clear()

    def calls_for(self, mac: str, method: str | None = None, answer: str | None = None
                  ) -> list[Call]:
        """Calls whose first parameter is ``mac`` in any spelling."""
        wanted = mac.replace(":", "").upper()
        with self._lock:
            return [c for c in self.calls
                    if c.params and re.sub(r"[^0-9A-F]", "", str(c.params[0]).upper()) == wanted
                    and (method is None or c.method == method)
                    and (answer is None or c.answer == answer)]

    # The services, as pure functions of state: (ok?, value to marshal or Fault).

    def _yealink(self, method: str, params: tuple[Any, ...]) -> tuple[bool, Any]:
        def answer(ok: bool, message: str) -> tuple[bool, Any]:
            return ok, [ok, message]

        if method == "redirect.addServer":
            name, url = params
            if not re.match(r"^[A-Za-z0-9 _.-]{1,20}$", name):
                return answer(False, "Error:the server name can only contain "
                              "'A-z 0-9 - _ . '(include space)")
            if not re.match(r"^(https?|t?ftp)://", url):
                return answer(False, "Error:The url can only begin with 'http://' or "
                              "'https://' or 'ftp://' or 'tftp://'")
            if name in self.yealink_servers:
                return answer(False, "Error:server_had_existed")
            self.yealink_servers[name] = url
            return answer(True, "OK")
        mac_raw = str(params[0]) if params else ""
        mac = re.sub(r"[^0-9A-F]", "", mac_raw.upper())
        if not _YEALINK_MAC.match(mac_raw) or not mac.startswith(YEALINK_OUIS):
            return answer(False, f"Error:Invalid MAC(s):{mac_raw}")
        if method == "redirect.registerDevice":
            _, server, *override = params
            if server not in self.yealink_servers:
                return answer(False, "Error:Invalid server")
            if mac in self.foreign:
                return answer(False, "Error:Q8ZK2M4X7P")  # the owning account's id
            assert override == ["1"], "we always ask to override our own older entries"
            self.yealink_devices[mac] = server
            return answer(True, "OK")
        if method == "redirect.deRegisterDevice":
            if mac not in self.yealink_devices:
                # Undocumented; the least helpful plausible form, so the adapter must check.
                return answer(False, f"Error:Invalid MAC(s):{mac_raw}")
            del self.yealink_devices[mac]
            return answer(True, "OK")
        if method == "redirect.checkDevice":
            if mac in self.foreign:
                return answer(True, "registered elsewhere")
            return answer(True, "registered" if mac in self.yealink_devices else "unregistered")
        return False, xmlrpc.client.Fault(-32601, f"unknown method {method}")

    def _panasonic(self, method: str, params: tuple[Any, ...]) -> tuple[bool, Any]:
        mac = str(params[0]) if params else ""
        if not method.startswith("ipredirect."):
            return False, xmlrpc.client.Fault(1, "Invalid XML format")
        if not _PANASONIC_MAC.match(mac) or not mac.startswith(PANASONIC_OUIS):
            return False, xmlrpc.client.Fault(200, f"{mac}:Invalid MAC address")
        if mac in self.foreign:
            return False, xmlrpc.client.Fault(202, "You are not owner of the phone")
        if method == "ipredirect.registerPhone":
            url = params[1]
            if not re.match(r"^https?://[^/\s]+/\S*$", url):
                return False, xmlrpc.client.Fault(100, "Invalid URL")
            self.panasonic_phones[mac] = url
            return True, True
        if method in ("ipredirect.unregisterPhone", "ipredirect.getPhone"):
            if mac not in self.panasonic_phones:
                return False, xmlrpc.client.Fault(201, "Phone not found")
            if method == "ipredirect.getPhone":
                return True, {"mac": mac, "url": self.panasonic_phones[mac], "note": "",
                              "model": "", "version": "", "profile": ""}
            del self.panasonic_phones[mac]
            return True, True
        return False, xmlrpc.client.Fault(1, "Invalid XML format")

    def _snom(self, method: str, params: tuple[Any, ...]) -> tuple[bool, Any]:
        def answer(ok: bool, message: str) -> tuple[bool, Any]:
            return ok, [ok, message]

        mac = str(params[0]) if params else ""
        if not _PANASONIC_MAC.match(mac) or not mac.startswith(SNOM_OUIS):
            return answer(False, f"Error:malformed_mac {mac}")
        if mac in self.foreign:
            return answer(False, "Error:owned_by_other_user")
        if method == "redirect.registerPhone":
            if not re.match(r"^https?://[^/\s]+/\S*$", params[1]):
                return answer(False, "Error:malformed_url")
            self.snom_phones[mac] = params[1]
            return answer(True, "Ok")
        if method in ("redirect.deregisterPhone", "redirect.getPhoneRedirection"):
            if mac not in self.snom_phones:
                return answer(False, "Error:not_found")
            if method == "redirect.getPhoneRedirection":
                return answer(True, self.snom_phones[mac])
            del self.snom_phones[mac]
            return answer(True, "Ok")
        return False, xmlrpc.client.Fault(-32601, f"unknown method {method}")

    def handle(self, vendor: str, body: bytes) -> tuple[int, bytes]:
        """An HTTP status and body for an authenticated POST to a vendor's path."""
        with self._lock:
            self.received[vendor] = self.received.get(vendor, 0) + 1
            script = self._script.get(vendor)
            failure = script.pop(0) if script else None
        if failure == "http500":
            self._record(vendor, body, "http500")
            return 500, b"<html><body>Internal Server Error</body></html>"
        if failure == "malformed":
            self._record(vendor, body, "malformed")
            return 200, b"<?xml version='1.0'?><methodResponse><params><param><value><arr"
        if failure == "slow":
            time.sleep(self.slow_seconds)  # then the vendor does the work anyway
        time.sleep(self.delay_seconds)
        params, method = xmlrpc.client.loads(body)
        assert method is not None
        service = {"yealink": self._yealink, "panasonic": self._panasonic,
                   "snom": self._snom}[vendor]
        with self._lock:
            ok, value = service(method, params)
            self.calls.append(Call(vendor, method, params,
                                   "slow" if failure else "ok" if ok else "error"))
        if isinstance(value, xmlrpc.client.Fault):
            return 200, xmlrpc.client.dumps(value, methodresponse=True).encode()
        return 200, xmlrpc.client.dumps((value,), methodresponse=True).encode()

    def _record(self, vendor: str, body: bytes, answer: str) -> None:
        params, method = xmlrpc.client.loads(body)
        with self._lock:
            self.calls.append(Call(vendor, str(method), params, answer))

    def authorized(self, header: str | None) -> bool:
        expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return header == f"Basic {expected}"


def _handler(fake: FakeVendor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            vendor = {YEALINK_PATH: "yealink", PANASONIC_PATH: "panasonic",
                      SNOM_PATH: "snom"}.get(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if vendor is None:
                self._send(404, b"not found")
            elif not fake.authorized(self.headers.get("Authorization")):
                self._send(401, b"unauthorized",
                           {"WWW-Authenticate": 'Basic realm="Please Enter Your Password"'})
            elif not (self.headers.get("Content-Type") or "").startswith("text/xml"):
                self._send(400, b"text/xml only")
            else:
                status, answer = fake.handle(vendor, body)
                self._send(status, answer, {"Content-Type": "text/xml"})

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            try:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up (a slow reply it timed out on)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _TlsServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a slow reply still sleeping must not hold up the test

    def __init__(self, address: tuple[str, int], handler: Callable[..., Any],
                 context: ssl.SSLContext) -> None:
        self.context = context
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs in the request's thread, not the accepting one.
        try:
            tls_socket = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # e.g. a client that does not trust our CA
        super().finish_request(tls_socket, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@contextmanager
def serving(tls: Tls, handler: type[BaseHTTPRequestHandler], name: str) -> Iterator[int]:
    """An HTTPS server on 127.0.0.1 with the fake CA's certificate; yields its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    server = _TlsServer(("127.0.0.1", 0), handler, context)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=name,
                              daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def running(tls: Tls, **kwargs: Any) -> Iterator[FakeVendor]:
    fake = FakeVendor(tls, **kwargs)
    with serving(tls, _handler(fake), "fake-vendor") as port:
        fake.port = port
        yield fake


def closed_port() -> int:
    """A port nothing listens on: a vendor that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
