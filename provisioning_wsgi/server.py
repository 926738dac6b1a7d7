"""`autoprov serve`: the provisioning app on both ports at once, with cheroot.

http_port: plain HTTP, the bootstrap files. https_port: TLS that requires a client certificate
chaining to one of the configured client CAs; the verified certificate reaches the app as
SSL_CLIENT_VERIFY and its subject's values (identity.SUBJECT_VALUES) in the WSGI environ.
admin_port: the operators' pages, over TLS with no client certificate (a browser has none), so
never on either of the phones' ports.

cheroot's builtin adapter does the TLS handshake in its single accept thread, so one client that
connects and stalls would hold up every other phone. Here the handshake runs in the worker thread
that serves the connection instead (HandshakeInWorker), bounded by the server's socket timeout.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import signal
import socket
import ssl
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from cheroot import server as cheroot_server
from cheroot import wsgi
from cheroot.ssl import Adapter
from cheroot.ssl.builtin import BuiltinSSLAdapter

from autoprov import config_fetch, tls
from autoprov.config import ROOT, Settings
from autoprov.redirect.worker import run_worker
from provisioning_wsgi import identity, logsink, metrics, sockfile, workers
from provisioning_wsgi.admin.app import AdminApp
from provisioning_wsgi.app import ProvisioningApp
from provisioning_wsgi.cache import ConfigCache, FetchWriter
from provisioning_wsgi.render import BOOTSTRAP_PATH, Renderer
from provisioning_wsgi.store import DatabaseUnavailableError, Store

log = logging.getLogger("autoprov.provisioning")

# Threads per worker process and port. Python runs one thread at a time per process: more
# threads than the work can use only fight over the GIL (with 16 TLS and 8 plain threads a plain
# fetch cost half as much again). The TLS port has more because a handshake runs in OpenSSL
# without the GIL. A client that stalls holds a thread for up to SOCKET_TIMEOUT_S.
TLS_THREADS = 8
PLAIN_THREADS = 4
ADMIN_THREADS = 4
# Socket timeout: a TLS handshake or a request that takes longer is dropped.
SOCKET_TIMEOUT_S = 10
# A fleet rebooting at once connects in bursts: cheroot's default backlog (5) drops them and the
# phones retry seconds later. The kernel caps this at net.core.somaxconn.
LISTEN_BACKLOG = 1024
TLS13_TICKETS = 1
SHUTDOWN_TIMEOUT_S = 5
# Fetch records older than this go, except each device's latest per port.
KEEP_FETCHES = timedelta(days=90)
PRUNE_EVERY_S = 3600.0


class ServeError(RuntimeError):
    """The service cannot start (a port is taken, TLS material is unusable)."""


def tls_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for cert, key in tls.server_pairs(settings):  # one per key type: see tls.server_pairs
        try:
            context.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as exc:
            raise tls.TlsError(f"server certificate {cert} / key {key}: {exc}") from None
    context.verify_mode = ssl.CERT_REQUIRED
    # TLS 1.3 session tickets: OpenSSL sends two after every handshake, each sealing the session
    # with the phone's certificate. One lets a phone resume for the next file it fetches.
    context.num_tickets = TLS13_TICKETS
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
    """cheroot's builtin adapter with our context, handing over an un-handshaken socket.

    BuiltinSSLAdapter's own set-up is skipped: it builds a context of its own and handshakes
    with itself over loopback to describe the server certificate, for SSL_SERVER_* variables no
    app reads."""

    def __init__(self, settings: Settings, context: ssl.SSLContext, admin: bool = False) -> None:
        cert, key = admin_server_files(settings) if admin else tls.server_files(settings)
        Adapter.__init__(self, str(cert), str(key))
        self.context = context

    # cheroot's setter also hooks a Python callback into every handshake that names a server
    # (SNI), to tag the socket with a name no app reads: the GIL taken inside each handshake.
    @property
    def context(self) -> ssl.SSLContext:
        return self._context

    @context.setter
    def context(self, context: ssl.SSLContext | None) -> None:
        if context is None:
            return  # cheroot's __init__ clears it; ours sets the real one right after
        self._context = context
        # Read once: the property builds a VerifyMode enum on every read.
        self._verifies_clients = context.verify_mode == ssl.CERT_REQUIRED

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, Any]]:
        wrapped = self.context.wrap_socket(sock, server_side=True,
                                           do_handshake_on_connect=False)
        return wrapped, {}

    def get_environ(self, sock: ssl.SSLSocket) -> dict[str, Any]:  # type: ignore[override]
        """Only what the apps read. cheroot's own version also fetches the TLS session and
        walks the context's cipher list on every connection: half the GIL time of a TLS
        fetch, for variables nobody reads."""
        # Only a certificate the context verified is decoded (the admin port asks for none).
        decoded = sock.getpeercert() if self._verifies_clients else None
        if not decoded:
            return {"HTTPS": "on", "SSL_CLIENT_VERIFY": "NONE"}
        return {"HTTPS": "on", "SSL_CLIENT_VERIFY": "SUCCESS",
                identity.SUBJECT_VALUES: identity.subject_values(
                    cast("identity.DecodedSubject", decoded.get("subject", ())))}


def _token(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text).split()).lower() or "-"


class Connection(cheroot_server.HTTPConnection):
    """cheroot's connection, reading and writing through provisioning_wsgi.sockfile: the
    response is sent whole once the request is answered (see sockfile on why)."""

    def __init__(self, server: Any, sock: socket.socket, makefile: Any = None) -> None:
        # cheroot's own __init__ also wraps two peer-credential methods in a new lru_cache per
        # connection (4 % of a fetch's GIL time); those are for UNIX sockets, never served here.
        self.server = server
        self.socket = sock
        self.wfile = sockfile.SocketWriter(sock)
        self.rfile = sockfile.SocketReader(sock, self.rbufsize)
        self.rfile.before_wait = self.wfile.flush
        self.requests_seen = 0

    def communicate(self) -> bool:
        try:
            return bool(super().communicate())  # type: ignore[no-untyped-call]
        finally:
            with contextlib.suppress(OSError):  # the peer went away; cheroot closes it
                self.wfile.flush()


class HandshakeInWorker(Connection):
    handshake_done = False

    def communicate(self) -> bool:
        if not self.handshake_done:
            try:
                self.socket.do_handshake()
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                # Closed before a certificate was sent (a port probe, our own readiness check):
                # nothing was refused, so no "denied" line for fail2ban or an operator's alerts.
                log.info("dropped client=%s port=%s reason=tls-handshake detail=eof",
                         self.remote_addr, self.server.label)
                return False
            except ssl.SSLError as exc:
                detail = getattr(exc, "verify_message", None) or exc.reason or str(exc)
                log.warning("denied client=%s port=%s reason=tls-handshake detail=%s",
                            self.remote_addr, self.server.label, _token(str(detail)))
                return False
            except OSError as exc:
                log.info("dropped client=%s port=%s reason=tls-handshake detail=%s",
                         self.remote_addr, self.server.label, _token(type(exc).__name__))
                return False
            self.ssl_env = self.server.ssl_adapter.get_environ(self.socket)
            self.handshake_done = True
        return super().communicate()


class Server(wsgi.Server):
    ConnectionClass = Connection
    # The port's name in log lines.
    label = "tls"
    # Bound by the parent process (workers.listening_socket) and shared with the other workers.
    listening: socket.socket | None = None

    def bind(self, family: int, type: int, proto: int = 0) -> socket.socket:
        if self.listening is None:
            return super().bind(family, type, proto)  # type: ignore[no-any-return]
        self.socket = self.listening
        self.bind_addr = self.resolve_real_bind_addr(self.listening)  # type: ignore[no-untyped-call]
        return self.listening

    def prepare(self) -> None:
        super().prepare()
        if self.listening is not None:
            self.socket.settimeout(0.0)  # cheroot set 1 s; see workers.listening_socket

    def error_log(self, msg: str = "", level: int = logging.INFO,
                  traceback: bool = False) -> None:
        log.log(level, "server: %s", msg, exc_info=traceback)


Listeners = dict[str, socket.socket]


def listen(settings: Settings) -> Listeners:
    """The service's sockets, bound once for every worker process; ServeError if one is taken."""
    ports = {"bootstrap": settings.http_port, "tls": settings.https_port}
    if settings.admin_port:
        ports["admin"] = settings.admin_port
    bound: Listeners = {}
    for name, port in ports.items():
        try:
            bound[name] = workers.listening_socket(settings.http_bind, port, LISTEN_BACKLOG)
        except OSError as exc:
            for sock in bound.values():
                sock.close()
            raise ServeError(f"cannot listen on {settings.http_bind}:{port}: {exc}") from None
    return bound


def _server(listening: socket.socket, app: Any, threads: int, label: str) -> Server:
    srv = Server(listening.getsockname()[:2], app, numthreads=threads, timeout=SOCKET_TIMEOUT_S,
                 shutdown_timeout=SHUTDOWN_TIMEOUT_S, request_queue_size=LISTEN_BACKLOG)
    srv.listening = listening
    srv.label = label
    srv.server_name = "autoprov"  # the Server header: no software version for scanners
    return srv


def phone_servers(settings: Settings, listeners: Listeners, phone_tls: ssl.SSLContext,
                  plain_app: Any, tls_app: Any) -> list[Server]:
    """The two phone ports' servers around the given apps (also the benchmark's baseline).

    phone_tls: made once in the parent process, before the workers fork, so that they share
    its session ticket key: a phone resumes its session with whichever worker it reaches."""
    plain = _server(listeners["bootstrap"], plain_app, PLAIN_THREADS, "bootstrap")
    secure = _server(listeners["tls"], tls_app, TLS_THREADS, "tls")
    secure.ssl_adapter = ClientCertAdapter(settings, phone_tls)
    secure.ConnectionClass = HandshakeInWorker
    return [plain, secure]


def _make_servers(settings: Settings, listeners: Listeners, phone_tls: ssl.SSLContext,
                  renderer: Renderer, cache: ConfigCache, writer: FetchWriter,
                  shared: metrics.Shared, index: int) -> list[Server]:
    db = Store(settings)
    servers = phone_servers(
        settings, listeners, phone_tls,
        ProvisioningApp("bootstrap", renderer, db, cache, writer,
                        shared.meter("bootstrap", index)),
        ProvisioningApp("tls", renderer, db, cache, writer, shared.meter("tls", index)))
    if index == 0 and "admin" in listeners:
        admin = _server(listeners["admin"],
                        AdminApp(settings, shared, shared.meter("admin", index)),
                        ADMIN_THREADS, "admin")
        admin.ssl_adapter = ClientCertAdapter(settings, admin_tls_context(settings), admin=True)
        admin.ConnectionClass = HandshakeInWorker
        servers.append(admin)
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
    """Serve every port until SIGTERM or SIGINT, from `http_workers` processes."""
    logging.basicConfig(level=logging.INFO, format=logsink.FORMAT, stream=sys.stderr)
    phone_tls = tls_context(settings)  # unusable TLS material: fail here, not in every worker
    if settings.admin_port:
        admin_tls_context(settings)
    listeners = listen(settings)
    log.info("listening: http://%s:%d%s (bootstrap), https://%s:%d (client certificates from %s)",
             settings.http_bind, settings.http_port, BOOTSTRAP_PATH, settings.http_bind,
             settings.https_port, ", ".join(str(p) for p in tls.client_ca_files(settings)))
    if settings.admin_port:
        log.info("operators' pages: https://%s:%d/admin/ (%s)", settings.http_bind,
                 settings.admin_port, "on" if settings.admin_password else
                 "off until admin_password is set")
    count = workers.count(settings.http_workers)
    # Made before the workers fork, so that all of them count into it: see metrics.
    shared = metrics.Shared(count, max(PLAIN_THREADS, TLS_THREADS, ADMIN_THREADS))
    if count == 1:
        return serve_worker(settings, listeners, phone_tls, shared, 0)
    return workers.supervise(count, lambda index: serve_worker(settings, listeners, phone_tls,
                                                               shared, index))


def serve_worker(settings: Settings, listeners: Listeners, phone_tls: ssl.SSLContext,
                 shared: metrics.Shared, index: int) -> int:
    """One worker process: every phone port; worker 0 also the operators' pages, the pruning
    of old fetch records and the vendor redirect jobs (each needs to run once)."""
    log_handler = logsink.install()
    renderer = Renderer(settings)
    cache = ConfigCache(settings, renderer)
    writer = FetchWriter(Store(settings))
    cache.start()
    writer.start()
    servers = _make_servers(settings, listeners, phone_tls, renderer, cache, writer, shared,
                            index)
    for srv in servers:
        srv.prepare()
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threads = [threading.Thread(target=srv.serve, name=f"serve-{srv.label}", daemon=True)
               for srv in servers]
    if index == 0:
        threads.append(threading.Thread(target=_prune_forever, args=(Store(settings), stop),
                                        name="prune", daemon=True))
        # Zero-touch: the vendor redirect jobs run beside the service the phones then reach.
        threads.append(threading.Thread(target=run_worker, args=(settings, stop),
                                        name="redirect", daemon=True))
    for thread in threads:
        thread.start()
    code = 0
    while not stop.wait(1.0):
        if not all(t.is_alive() for t in threads[:len(servers)]):
            log.error("a listener stopped; exiting")
            code = 1
            break
    stop.set()
    for srv in servers:
        srv.stop()
    writer.stop()  # the fetches still queued are written
    cache.stop()
    for thread in threads[len(servers):]:
        thread.join(timeout=10)  # let a vendor call in flight finish or time out
    log.info("worker %d stopped", index)
    log_handler.close()
    return code


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
    try:
        problem = _tls_server_hello(host, settings.https_port, timeout)
    except OSError as exc:
        problem = str(exc)
    if problem:
        return f"HTTPS {host}:{settings.https_port} does not answer ({problem})"
    return None


def _tls_server_hello(host: str, port: int, timeout: float) -> str | None:
    """None if the port answers a ClientHello with a TLS server's first flight.

    The handshake is never finished: a client that completes it without a certificate is
    refused, and that refusal is a WARNING "denied" line at every start of the stack. Closing
    after the server's hello is logged as a dropped connection instead."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    hello = context.wrap_bio(incoming, outgoing)
    with contextlib.suppress(ssl.SSLWantReadError):
        hello.do_handshake()
    with socket.create_connection((host, port), timeout=timeout) as raw:
        raw.sendall(outgoing.read())
        answer = raw.recv(16384)
    if not answer:
        return "closed without an answer"
    incoming.write(answer)
    try:
        hello.do_handshake()  # parses the ServerHello; wants more than one read brings
    except ssl.SSLWantReadError:
        pass
    except ssl.SSLError as exc:
        return f"not a TLS server: {exc.reason or exc}"
    return None


def command(settings: Settings, code_root: Path = ROOT) -> list[str]:
    return [sys.executable, "-m", "autoprov.cli", "serve"]


def environment(settings: Settings, code_root: Path = ROOT) -> dict[str, str]:
    env = dict(os.environ)
    env.update(settings.as_env())
    env["PYTHONPATH"] = str(code_root)
    env["PYTHONUNBUFFERED"] = "1"
    return env
