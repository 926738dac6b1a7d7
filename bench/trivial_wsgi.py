"""Baseline for the config-fetch benchmark: `autoprov serve`'s own server machinery (cheroot, the
same worker processes, unix sockets behind the web front, thread counts and timeouts) serving a
constant body from a trivial app: no database, no template, no logging.

python -m bench.trivial_wsgi BODY_PLAIN BODY_TLS  (ports and TLS files from AUTOPROV_* settings)
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from wsgiref.types import StartResponse, WSGIEnvironment

from autoprov import config
from provisioning_wsgi import server, workers


def constant(body: bytes, content_type: str) -> server.wsgi.WSGIApplication:  # type: ignore[name-defined]
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", headers)
        return [body]

    return app


def main(argv: list[str]) -> int:
    settings = config.load()
    plain_body, tls_body = Path(argv[0]).read_bytes(), Path(argv[1]).read_bytes()
    listeners = server.listen(settings.replace(admin_port=0))

    def serve(index: int) -> int:
        servers = server.phone_servers(listeners, constant(plain_body, "text/plain"),
                                       constant(tls_body, "text/plain"))
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        for srv in servers:
            srv.prepare()
            threading.Thread(target=srv.serve, daemon=True).start()
        stop.wait()
        for srv in servers:
            srv.stop()
        return 0

    count = workers.count(settings.http_workers)
    return serve(0) if count == 1 else workers.supervise(count, serve)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
