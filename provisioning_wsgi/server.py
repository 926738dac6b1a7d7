"""`autoprov serve`: the provisioning app on the three web ports, with cheroot, behind the front.

The web front (autoprov/front.py, nginx) listens on the ports, reads each request whole (with
timeouts and size limits for every client), does the TLS and verifies phone client
certificates, then hands the request to this service on the unix socket of its port:
bootstrap (http_port: the bootstrap files), tls (https_port: the verified certificate reaches the
app as SSL_CLIENT_VERIFY and its subject's values, identity.SUBJECT_VALUES) and admin
(admin_port: the operators' pages). What the front says about a request is read by
behind_front.BehindFront. This service listens on no TCP port of its own.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import signal
import socket
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from cheroot import server as cheroot_server
from cheroot import wsgi

from autoprov import config_fetch, front
from autoprov.config import ROOT, Settings
from autoprov.redirect.worker import run_worker
from provisioning_wsgi import logsink, metrics, sockfile, workers
from provisioning_wsgi.admin.app import AdminApp
from provisioning_wsgi.app import ProvisioningApp
from provisioning_wsgi.behind_front import BehindFront
from provisioning_wsgi.cache import ConfigCache, FetchWriter
from provisioning_wsgi.fetchlog import FetchLog
from provisioning_wsgi.publish import Manifest, Publisher
from provisioning_wsgi.render import BOOTSTRAP_PATH, Renderer
from provisioning_wsgi.store import DatabaseUnavailableError, Store

log = logging.getLogger("autoprov.provisioning")

# Threads per worker process and port. Python runs one thread at a time per process: more
# threads than the work can use only fight over the GIL. A request reaches a thread only once
# nginx has read it whole, so no client can hold one by being slow.
PHONE_THREADS = 4
ADMIN_THREADS = 4
# An idle kept-alive connection from the front is closed after this (the front closes its own
# sooner: front.UPSTREAM_IDLE_S).
SOCKET_TIMEOUT_S = 10
LISTEN_BACKLOG = 1024
SHUTDOWN_TIMEOUT_S = 5
# Fetch records older than this go, except each device's latest per port.
KEEP_FETCHES = timedelta(days=90)
PRUNE_EVERY_S = 3600.0


class ServeError(RuntimeError):
    """The service cannot start (a socket is in use by another instance)."""


class Connection(cheroot_server.HTTPConnection):
    """cheroot's connection, reading and writing through provisioning_wsgi.sockfile: the
    response is sent whole once the request is answered (see sockfile on why)."""

    def __init__(self, server: Any, sock: socket.socket, makefile: Any = None) -> None:
        # cheroot's own __init__ also wraps two peer-credential methods in a new lru_cache per
        # connection (4 % of a fetch's GIL time), for peercreds_enabled, which is off here.
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


class Server(wsgi.Server):
    ConnectionClass = Connection
    # The port's name in log lines.
    label = "tls"
    # Bound by the parent process (workers.listening_unix_socket), shared with the other workers.
    listening: socket.socket | None = None

    def bind_unix_socket(self, bind_addr: str) -> socket.socket:
        # cheroot's own would unlink the parent's socket and bind a new one in each worker.
        assert self.listening is not None
        self.socket = self.listening
        return self.listening

    def prepare(self) -> None:
        super().prepare()
        if self.listening is not None:
            self.socket.settimeout(0.0)  # cheroot set 1 s; see workers.listening_unix_socket

    def error_log(self, msg: str = "", level: int = logging.INFO,
                  traceback: bool = False) -> None:
        log.log(level, "server: %s", msg, exc_info=traceback)


Listeners = dict[str, socket.socket]


def labels(settings: Settings) -> list[str]:
    return [label for label in front.LABELS if label != "admin" or settings.admin_port]


def listen(settings: Settings) -> Listeners:
    """The service's unix sockets, bound once for every worker process; ServeError if another
    instance answers on one."""
    front.prepare_socket_dir(settings)
    bound: Listeners = {}
    for label in labels(settings):
        path = front.socket_path(settings, label)
        try:
            if _answers(path):
                raise OSError(f"another instance serves {path}")
            bound[label] = workers.listening_unix_socket(path, LISTEN_BACKLOG)
        except OSError as exc:
            for sock in bound.values():
                sock.close()
            raise ServeError(f"cannot listen on {path}: {exc}") from None
    return bound


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe_sock:
        try:
            probe_sock.connect(str(path))
        except OSError:
            return False
    return True


def _server(listening: socket.socket, app: Any, threads: int, label: str) -> Server:
    srv = Server(listening.getsockname(), BehindFront(app, label), numthreads=threads,
                 timeout=SOCKET_TIMEOUT_S, shutdown_timeout=SHUTDOWN_TIMEOUT_S,
                 request_queue_size=LISTEN_BACKLOG)
    srv.listening = listening
    srv.label = label
    srv.server_name = "autoprov"  # the Server header (passed on by the front): no version
    return srv


def phone_servers(listeners: Listeners, plain_app: Any, tls_app: Any) -> list[Server]:
    """The two phone ports' servers around the given apps (also the benchmark's baseline)."""
    return [_server(listeners["bootstrap"], plain_app, PHONE_THREADS, "bootstrap"),
            _server(listeners["tls"], tls_app, PHONE_THREADS, "tls")]


def _make_servers(settings: Settings, listeners: Listeners, renderer: Renderer,
                  cache: ConfigCache, writer: FetchWriter, shared: metrics.Shared,
                  index: int) -> list[Server]:
    db = Store(settings)
    servers = phone_servers(
        listeners,
        ProvisioningApp("bootstrap", renderer, db, cache, writer,
                        shared.meter("bootstrap", index)),
        ProvisioningApp("tls", renderer, db, cache, writer, shared.meter("tls", index)))
    if index == 0 and "admin" in listeners:
        servers.append(_server(listeners["admin"],
                               AdminApp(settings, shared, shared.meter("admin", index)),
                               ADMIN_THREADS, "admin"))
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
    """Serve every port's socket until SIGTERM or SIGINT, from `http_workers` processes."""
    logging.basicConfig(level=logging.INFO, format=logsink.FORMAT, stream=sys.stderr)
    listeners = listen(settings)
    log.info("listening behind the front on %s: http://%s:%d%s (bootstrap), https://%s:%d "
             "(client certificates)", front.socket_dir(settings), settings.http_bind,
             settings.http_port, BOOTSTRAP_PATH, settings.http_bind, settings.https_port)
    if settings.admin_port:
        log.info("operators' pages: https://%s:%d/admin/ (%s)", settings.http_bind,
                 settings.admin_port, "on" if settings.admin_password else
                 "off until admin_password is set")
    count = workers.count(settings.http_workers)
    # Made before the workers fork, so that all of them count into it: see metrics. The
    # publisher (the last process) counts the fetches the front answered from its files.
    shared = metrics.Shared(count + 1, max(PHONE_THREADS, ADMIN_THREADS))

    def work(index: int) -> int:
        if index == count:
            return serve_published(settings, shared, index)
        return serve_worker(settings, listeners, shared, index)

    try:
        return workers.supervise(count + 1, work)
    finally:  # only the parent gets here: a worker ends in os._exit (workers._fork)
        for label in listeners:
            front.socket_path(settings, label).unlink(missing_ok=True)


def serve_worker(settings: Settings, listeners: Listeners, shared: metrics.Shared,
                 index: int) -> int:
    """One worker process: every phone port; worker 0 also the operators' pages, the pruning
    of old fetch records and the vendor redirect jobs (each needs to run once)."""
    log_handler = logsink.install()
    renderer = Renderer(settings)
    cache = ConfigCache(settings, renderer)
    writer = FetchWriter(Store(settings))
    cache.start()
    writer.start()
    servers = _make_servers(settings, listeners, renderer, cache, writer, shared, index)
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


def serve_published(settings: Settings, shared: metrics.Shared, index: int) -> int:
    """The process that keeps the phones' files published for the front to serve
    (provisioning_wsgi/publish.py) and records the front's fetches of them
    (provisioning_wsgi/fetchlog.py)."""
    log_handler = logsink.install()
    manifest = Manifest()
    publisher = Publisher(settings, Renderer(settings), manifest)
    writer = FetchWriter(Store(settings), gather_s=0.0)  # the log's reads are the batches
    writer.start()
    fetches = FetchLog(settings, manifest, writer,
                       {port: shared.meter(port, index) for port in ("bootstrap", "tls")})
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def read_fetches() -> None:
        # Lines left from before this process name files of the manifest it is about to make.
        while not publisher.live_once.wait(0.5):
            if stop.is_set():
                return
        fetches.run(stop)

    threads = [threading.Thread(target=publisher.run, args=(stop,), name="publish",
                                daemon=True),
               threading.Thread(target=read_fetches, name="fetch-log", daemon=True)]
    for thread in threads:
        thread.start()
    code = 0
    while not stop.wait(1.0):
        if not all(t.is_alive() for t in threads):
            log.error("the publisher or the fetch log reader stopped; exiting")
            code = 1
            break
    stop.set()
    publisher.withdraw()  # the front asks the app from now on
    for thread in threads:
        thread.join(timeout=10)
    writer.stop()
    log_handler.close()
    return code


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.path))


def probe(settings: Settings, timeout: float = 1.0) -> str | None:
    """None once the service answers on its bootstrap socket (the front's probe: front.probe)."""
    path = front.socket_path(settings, "bootstrap")
    try:
        conn = _UnixHTTPConnection(path, timeout)
        try:
            conn.request("GET", BOOTSTRAP_PATH)
            conn.getresponse().read()
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as exc:
        return f"{path} does not answer ({exc})"
    return None


def command(settings: Settings, code_root: Path = ROOT) -> list[str]:
    return [sys.executable, "-m", "autoprov.cli", "serve"]


def environment(settings: Settings, code_root: Path = ROOT) -> dict[str, str]:
    env = dict(os.environ)
    env.update(settings.as_env())
    env["PYTHONPATH"] = str(code_root)
    env["PYTHONUNBUFFERED"] = "1"
    return env
