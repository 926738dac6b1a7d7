"""`autoprov serve`: the provisioning app on both ports at once, with cheroot.

http_port: plain HTTP, the bootstrap files. https_port: TLS that requires a client certificate
chaining to one of the configured client CAs; the verified certificate reaches the app as
SSL_CLIENT_VERIFY / SSL_CLIENT_CERT in the WSGI environ. admin_port: the operators' pages, over
TLS with no client certificate (a browser has none), so never on either of the phones' ports.

cheroot's builtin adapter does the TLS handshake in its single accept thread, so one client that
connects and stalls would hold up every other phone. Here the handshake runs in the worker thread
that serves the connection instead (HandshakeInWorker), bounded by the server's socket timeout.
"""

from __future__ import annotations

import http.client
import logging
import logging.handlers
import os
import queue
import signal
import socket
import ssl
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from cheroot import server as cheroot_server
from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from autoprov import config_fetch, tls
from autoprov.config import ROOT, Settings
from autoprov.redirect.worker import run_worker
from provisioning_wsgi.admin.app import AdminApp
from provisioning_wsgi.app import ProvisioningApp
from provisioning_wsgi.cache import ConfigCache, FetchWriter
from provisioning_wsgi.render import BOOTSTRAP_PATH, Renderer
from provisioning_wsgi.store import DatabaseUnavailableError, Store

log = logging.getLogger("autoprov.provisioning")

TLS_THREADS = 16
PLAIN_THREADS = 8
ADMIN_THREADS = 4
# Socket timeout: a TLS handshake or a request that takes longer is dropped.
SOCKET_TIMEOUT_S = 10
# A fleet rebooting at once connects in bursts: cheroot's default backlog (5) drops them and the
# phones retry seconds later. The kernel caps this at net.core.somaxconn.
LISTEN_BACKLOG = 1024
SHUTDOWN_TIMEOUT_S = 5
# Fetch records older than this go, except each device's latest per port.
KEEP_FETCHES = timedelta(days=90)
PRUNE_EVERY_S = 3600.0


class ServeError(RuntimeError):
    """The service cannot start (a port is taken, TLS material is unusable)."""


def tls_context(settings: Settings) -> ssl.SSLContext:
    cert, key = tls.server_files(settings)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise tls.TlsError(f"server certificate {cert} / key {key}: {exc}") from None
    context.verify_mode = ssl.CERT_REQUIRED
    for ca in tls.client_ca_files(settings):
        try:
            context.load_verify_locations(cafile=str(ca))
        except (OSError, ssl.SSLError) as exc:
            raise tls.TlsError(f"client CA {ca}: {exc}") from None
    return context


def admin_tls_context(settings: Settings) -> ssl.SSLContext:
    """The operators' port: a certificate browsers trust, no client certificate asked for."""
    cert, key = admin_server_files(settings)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise tls.TlsError(f"admin certificate {cert} / key {key}: {exc}") from None
    return context


def admin_server_files(settings: Settings) -> tuple[Path, Path]:
    # Production's phone-facing certificate is Cisco-signed, which no browser trusts.
    if settings.admin_tls_cert or settings.admin_tls_key:
        if not (settings.admin_tls_cert and settings.admin_tls_key):
            raise tls.TlsError("admin_tls_cert and admin_tls_key must be set together")
        return Path(settings.admin_tls_cert), Path(settings.admin_tls_key)
    return tls.server_files(settings)


class ClientCertAdapter(BuiltinSSLAdapter):
    """cheroot's builtin adapter with our context, handing over an un-handshaken socket."""

    def __init__(self, settings: Settings, admin: bool = False) -> None:
        cert, key = admin_server_files(settings) if admin else tls.server_files(settings)
        super().__init__(str(cert), str(key))
        self.context = admin_tls_context(settings) if admin else tls_context(settings)

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, Any]]:
        wrapped = self.context.wrap_socket(sock, server_side=True,
                                           do_handshake_on_connect=False)
        return wrapped, {}


def _token(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text).split()).lower() or "-"


class HandshakeInWorker(cheroot_server.HTTPConnection):
    handshake_done = False

    def communicate(self) -> bool:
        if not self.handshake_done:
            try:
                self.socket.do_handshake()
            except ssl.SSLError as exc:
                detail = getattr(exc, "verify_message", None) or exc.reason or str(exc)
                # Cleanly closed before a certificate was sent: a port probe, not an attack.
                level = logging.INFO if isinstance(exc, ssl.SSLEOFError) else logging.WARNING
                log.log(level, "denied client=%s port=%s reason=tls-handshake detail=%s",
                        self.remote_addr, self.server.label, _token(str(detail)))
                return False
            except OSError as exc:
                log.info("dropped client=%s port=%s reason=tls-handshake detail=%s",
                         self.remote_addr, self.server.label, _token(type(exc).__name__))
                return False
            self.ssl_env = self.server.ssl_adapter.get_environ(self.socket)
            self.handshake_done = True
        return bool(super().communicate())  # type: ignore[no-untyped-call]


class Server(wsgi.Server):
    # The port's name in log lines.
    label = "tls"

    def error_log(self, msg: str = "", level: int = logging.INFO,
                  traceback: bool = False) -> None:
        log.log(level, "server: %s", msg, exc_info=traceback)


def _make_servers(settings: Settings, cache: ConfigCache | None = None,
                  writer: FetchWriter | None = None) -> list[Server]:
    renderer = Renderer(settings)
    db = Store(settings)
    plain = Server((settings.http_bind, settings.http_port),
                   ProvisioningApp("bootstrap", renderer, db, cache, writer),
                   numthreads=PLAIN_THREADS,
                   timeout=SOCKET_TIMEOUT_S, shutdown_timeout=SHUTDOWN_TIMEOUT_S,
                   request_queue_size=LISTEN_BACKLOG)
    secure = Server((settings.http_bind, settings.https_port),
                    ProvisioningApp("tls", renderer, db, cache, writer), numthreads=TLS_THREADS,
                    timeout=SOCKET_TIMEOUT_S, shutdown_timeout=SHUTDOWN_TIMEOUT_S,
                    request_queue_size=LISTEN_BACKLOG)
    secure.ssl_adapter = ClientCertAdapter(settings)
    secure.ConnectionClass = HandshakeInWorker
    servers = [plain, secure]
    if settings.admin_port:
        admin = Server((settings.http_bind, settings.admin_port), AdminApp(settings),
                       numthreads=ADMIN_THREADS, timeout=SOCKET_TIMEOUT_S,
                       shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        admin.ssl_adapter = ClientCertAdapter(settings, admin=True)
        admin.ConnectionClass = HandshakeInWorker
        admin.label = "admin"
        servers.append(admin)
    for srv in servers:
        srv.server_name = "autoprov"  # the Server header: no software version for scanners
    return servers


def _prune_forever(db: Store, stop: threading.Event) -> None:
    while not stop.wait(PRUNE_EVERY_S):
        try:
            gone = db.run(lambda conn: config_fetch.prune(conn, KEEP_FETCHES))
        except DatabaseUnavailableError as exc:
            log.warning("pruning config fetches: database unavailable: %s", exc)
            continue
        if gone:
            log.info("pruned %d config fetch record(s) older than %s", gone, KEEP_FETCHES)


def serve(settings: Settings) -> int:
    """Serve both ports until SIGTERM or SIGINT."""
    # A line per request (for fail2ban): written by a thread of its own, so request threads
    # never queue on the handler's lock or on a slow stderr.
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setFormatter(logging.Formatter(
        "%(asctime)s autoprov-provisioning[%(process)d] %(levelname)s %(message)s"))
    log_queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    log_writer = logging.handlers.QueueListener(log_queue, to_stderr)
    log_writer.start()
    to_queue = logging.handlers.QueueHandler(log_queue)
    to_queue.setFormatter(logging.Formatter("%(message)s"))  # the rest is added by to_stderr
    logging.basicConfig(level=logging.INFO, handlers=[to_queue])
    cache = ConfigCache(settings)
    writer = FetchWriter(Store(settings))
    cache.start()
    writer.start()
    servers = _make_servers(settings, cache, writer)
    try:
        for srv in servers:
            srv.prepare()
    except OSError as exc:
        for srv in servers:
            srv.stop()
        writer.stop()
        cache.stop()
        log_writer.stop()
        raise ServeError(f"cannot listen on {settings.http_bind}: {exc}") from None
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threads = [threading.Thread(target=srv.serve, name=f"serve-{i}", daemon=True)
               for i, srv in enumerate(servers)]
    threads.append(threading.Thread(target=_prune_forever, args=(Store(settings), stop),
                                    name="prune", daemon=True))
    # Zero-touch: the vendor redirect jobs run beside the service that the phones then reach.
    threads.append(threading.Thread(target=run_worker, args=(settings, stop), name="redirect",
                                    daemon=True))
    for thread in threads:
        thread.start()
    log.info("listening: http://%s:%d%s (bootstrap), https://%s:%d (client certificates from %s)",
             settings.http_bind, settings.http_port, BOOTSTRAP_PATH, settings.http_bind,
             settings.https_port, ", ".join(str(p) for p in tls.client_ca_files(settings)))
    if settings.admin_port:
        log.info("operators' pages: https://%s:%d/admin/ (%s)", settings.http_bind,
                 settings.admin_port, "on" if settings.admin_password else
                 "off until admin_password is set")
    while not stop.wait(1.0):
        if not all(t.is_alive() for t in threads[:len(servers)]):
            log.error("a listener stopped; exiting")
            break
    stop.set()
    for srv in servers:
        srv.stop()
    writer.stop()  # the fetches still queued are written
    cache.stop()
    threads[-1].join(timeout=10)  # let a vendor call in flight finish or time out
    log.info("stopped")
    log_writer.stop()
    return 0


def _probe_host(bind: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bind, bind)  # noqa: S104


def probe(settings: Settings, timeout: float = 1.0) -> str | None:
    """None once both ports answer: HTTP on the plain one, a TLS server on the other."""
    host = _probe_host(settings.http_bind)
    try:
        plain = http.client.HTTPConnection(host, settings.http_port, timeout=timeout)
        try:
            plain.request("GET", BOOTSTRAP_PATH)
            plain.getresponse().read()
        finally:
            plain.close()
    except (OSError, http.client.HTTPException) as exc:
        return f"HTTP {host}:{settings.http_port} does not answer ({exc})"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, settings.https_port), timeout=timeout) as raw, \
                context.wrap_socket(raw) as secure:
            secure.getpeercert(binary_form=True)
    except ssl.SSLError:
        pass  # a TLS alert (no client certificate) is an answer from a TLS server
    except OSError as exc:
        return f"HTTPS {host}:{settings.https_port} does not answer ({exc})"
    return None


def command(settings: Settings, code_root: Path = ROOT) -> list[str]:
    return [sys.executable, "-m", "autoprov.cli", "serve"]


def environment(settings: Settings, code_root: Path = ROOT) -> dict[str, str]:
    env = dict(os.environ)
    env.update(settings.as_env())
    env["PYTHONPATH"] = str(code_root)
    env["PYTHONUNBUFFERED"] = "1"
    return env
