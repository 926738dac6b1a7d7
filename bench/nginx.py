"""Baseline: nginx serving the same bytes as static files, plain and with client-certificate TLS:
the same TLS directives as the web front's phone port (autoprov/front.py: certificates,
versions, client CAs, session tickets and cache) and the same listen backlog."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from autoprov import front, stack, tls
from autoprov.config import Settings
from tests.conftest import RunningService

CONF = """
worker_processes auto;
error_log {base}/error.log warn;
pid {base}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log {base}/access.log;
    client_body_temp_path {base}/tmp/body;
    proxy_temp_path {base}/tmp/proxy;
    fastcgi_temp_path {base}/tmp/fastcgi;
    uwsgi_temp_path {base}/tmp/uwsgi;
    scgi_temp_path {base}/tmp/scgi;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{plain} backlog={backlog};
        root {base}/root;
    }}
    server {{
        listen 127.0.0.1:{secure} ssl backlog={backlog};
        root {base}/root;
{tls}
    }}
}}
"""


def start(settings: Settings, base: Path, files: dict[str, bytes], plain: int,
          secure: int) -> RunningService:
    """nginx in the foreground on `plain` and `secure`, serving `files` (URL path: bytes)."""
    (base / "tmp").mkdir(parents=True, exist_ok=True)
    for url_path, body in files.items():
        target = base / "root" / url_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
    # The client CAs in one file, as the front has them.
    client_ca = base / "client-ca.pem"
    client_ca.write_bytes(b"".join(p.read_bytes().rstrip(b"\n") + b"\n"
                                   for p in tls.client_ca_files(settings)))
    conf = base / "nginx.conf"
    conf.write_text(CONF.format(base=base, plain=plain, secure=secure,
                                backlog=front.LISTEN_BACKLOG,
                                tls=front.phone_tls(settings, client_ca)))
    for path in [base, *base.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # workers run as nobody
    argv = [shutil.which("nginx") or "/usr/sbin/nginx", "-e", str(base / "error.log"),
            "-c", str(conf), "-g", "daemon off;"]
    service = stack.Service("nginx", argv, {}, lambda: _probe(plain))
    with (base / "nginx.out").open("ab") as log:
        stack.spawn(service, log)
    stack.wait_ready(service, time.monotonic() + 20)
    return RunningService(service, base / "error.log")


def _probe(port: int) -> str | None:
    done = subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"],
                          check=False, timeout=5)
    return None if done.returncode == 0 else f"nginx :{port} does not answer"
