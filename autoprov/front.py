"""The web front: nginx on the three web ports, the WSGI app behind it on unix sockets.

nginx reads requests (timeouts and size limits for every client, thousands of idle or slow ones
costing it a few hundred bytes each), does the TLS (both server certificates, client
certificates on https_port, session tickets), and hands each complete request to the app on the
unix socket of its port (socket_path). On those sockets the app trusts what the front adds
(HEADERS), because nginx always sets them, replacing anything a client sent.

A request the front refuses (too large, too many connections from one address, a client
certificate that fails verification) still reaches the app, on a named location with the
X-Autoprov-Refused header, so that the app writes the one refusal line fail2ban reads, with
the client's address, and answers it.
"""

from __future__ import annotations

import contextlib
import grp
import http.client
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

from autoprov import pgcluster, tls
from autoprov.config import Settings
from provisioning_wsgi import firmware
from provisioning_wsgi.api.app import MAX_CSV_BYTES
from provisioning_wsgi.api.app import PREFIX as API_PREFIX

# As root, the sockets, nginx's pid and temp folders live here (see socket_dir).
ROOT_RUN = Path("/run/autoprov")
# nginx's workers run as this user when it is started as root (Debian's nginx uses it too).
WORKER_USER = "www-data"
LABELS = ("bootstrap", "tls", "admin")

# Headers the front sets on every request it passes on (never what the client sent).
CLIENT_HEADER = "X-Autoprov-Client"
VERIFY_HEADER = "X-Autoprov-Verify"
SUBJECT_HEADER = "X-Autoprov-Subject"
REFUSED_HEADER = "X-Autoprov-Refused"
# The refused request's own URI (the app is handed an internal one): the API answers in JSON.
REFUSED_URI_HEADER = "X-Autoprov-Refused-Uri"

# What nginx refuses itself, and what the app answers in its place: 494 is nginx's own code
# for a header line larger than front_max_header_kb; 495/496 a client certificate that
# failed verification / none at all.
REFUSED_PREFIX = "/autoprov-refused/"
REFUSALS = {400: 400, 413: 413, 414: 414, 429: 429, 494: 431, 495: 403, 496: 403}
# A phone sends no body; an operator's form is at most admin.web.MAX_FORM_BYTES.
PHONE_BODY_MAX = "1k"
ADMIN_BODY_MAX = "8k"
# The REST API's CSV import takes a spreadsheet; the app bounds it (and a JSON body) itself.
API_BODY_MAX = f"{MAX_CSV_BYTES // 1024}k"
# Where the admin port takes such bodies: the API, and the import page's pasted spreadsheet.
ADMIN_LARGE_BODIES = {API_PREFIX + "/": API_BODY_MAX, "= /admin/import": API_BODY_MAX}
# Idle kept-alive connections per nginx worker to the app: fewer than the app's threads, and
# closed by nginx (UPSTREAM_IDLE_S) before cheroot would close them.
UPSTREAM_KEEPALIVE = 2
UPSTREAM_IDLE_S = 4
LISTEN_BACKLOG = 1024
# nginx's module for the Server header on what nginx answers itself (Debian's
# libnginx-mod-http-headers-more-filter).
HEADERS_MORE = "/usr/lib/nginx/modules/ngx_http_headers_more_filter_module.so"
# The name in a phone's file path, as provisioning_wsgi.vendors.SAFE_FILE.
FILE_NAME = "[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
LIVE = "live"
# A MAC in the subject string nginx makes of a verified certificate (RFC 2253): 12 hex digits
# standing alone. A backslash next to it is an escaped byte, which would make the value the app
# reads (identity.dn_values) another one: that subject goes to the app. ("\\\\" is one
# backslash in the regex, once nginx's quoting is undone.)
CERT_MAC = r"~(?<![0-9A-Fa-f\\\\])(?<autoprov_mac>[0-9A-Fa-f]{12})(?![0-9A-Fa-f\\\\])"
TLS_VERSIONS = ("1.0", "1.1", "1.2", "1.3")


class FrontError(RuntimeError):
    """The front's configuration cannot be made (a setting is wrong, nginx refuses it)."""


def socket_dir(settings: Settings) -> Path:
    """Where the app's sockets are. As root, under /run: nginx's workers run as WORKER_USER,
    who cannot enter a checkout in /root (0700); the folder's name is the checkout's, as for
    its database cluster. Otherwise nginx's workers are this user, who can reach var_dir."""
    if os.geteuid() == 0:
        return ROOT_RUN / pgcluster.checkout_key(settings.var_dir)
    return settings.run_dir / "front"


def socket_path(settings: Settings, label: str) -> Path:
    return socket_dir(settings) / f"{label}.sock"


def conf_path(settings: Settings) -> Path:
    return socket_dir(settings) / "nginx.conf"


def prepare_socket_dir(settings: Settings) -> Path:
    """The socket folder, reachable by nginx's workers and nobody else."""
    path = socket_dir(settings)
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(path, 0, worker_gid())
        path.chmod(0o750)
    else:
        path.chmod(0o700)
    return path


def worker_gid() -> int:
    return grp.getgrnam(pwd.getpwnam(WORKER_USER).pw_name).gr_gid


def _protocols(minimum: str) -> str:
    if minimum not in TLS_VERSIONS:
        raise FrontError(f"tls_min_version {minimum!r}: one of {', '.join(TLS_VERSIONS)}")
    names = {"1.0": "TLSv1", "1.1": "TLSv1.1", "1.2": "TLSv1.2", "1.3": "TLSv1.3"}
    return " ".join(names[v] for v in TLS_VERSIONS[TLS_VERSIONS.index(minimum):])


def _host(bind: str) -> str:
    return f"[{bind}]" if ":" in bind else (bind or "0.0.0.0")  # noqa: S104


def _proxied(settings: Settings, label: str, headers: str,
             bodies: dict[str, str] | None = None) -> str:
    """The location that hands requests to the app, one per path prefix that takes larger
    bodies (bodies: prefix -> client_max_body_size), and one per refusal."""
    base = f"""
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header {CLIENT_HEADER} $remote_addr;
{headers}"""
    # A URI, not a named location: a request line too long for nginx has no URI of its own.
    refusals = "\n".join(
        f"""        error_page {code} = {REFUSED_PREFIX}{code};
        location = {REFUSED_PREFIX}{code} {{
            internal;
            proxy_pass http://{label};{base}
            proxy_set_header {REFUSED_HEADER} {answer};
            proxy_set_header {REFUSED_URI_HEADER} $request_uri;
            proxy_set_header Content-Length "";
            proxy_pass_request_body off;
        }}""" for code, answer in REFUSALS.items())
    limits = {"/": "", f"@{label}": "",
              **{path: f"\n            client_max_body_size {size};"
                 for path, size in (bodies or {}).items()}}
    locations = "\n".join(f"""        location {path} {{{limit}
            proxy_pass http://{label};{base}
            proxy_set_header {REFUSED_HEADER} "";
        }}""" for path, limit in limits.items())
    return f"""{locations}
{refusals}"""


def _firmware(settings: Settings) -> str:
    """firmware_dir's images, served by nginx itself (ETag, Range, If-None-Match; a download
    holds no app worker): names as provisioning_wsgi/firmware.py makes them, anything else 404."""
    if not settings.firmware_dir:
        return ""
    root = Path(settings.firmware_dir).resolve()
    name = firmware.NAME
    return f"""        location {firmware.PATH} {{
            location ~ "^{firmware.PATH}({name})/({name})/({name})$" {{
                alias {root}/$1/$2/$3;
                limit_except GET {{ deny all; }}
                add_header Cache-Control "public, max-age=3600" always;
            }}
            return 404;
        }}
"""


def _published(settings: Settings, label: str) -> str:
    """A phone's own files, answered by nginx from the publisher's files
    (provisioning_wsgi/publish.py) when it has them, else by the app (@label); each answer
    a line of the fetch log (provisioning_wsgi/fetchlog.py). On the TLS port only from the
    folder of the MAC the verified certificate names (CERT_MAC)."""
    from provisioning_wsgi import publish  # the publisher imports this module
    from provisioning_wsgi.render import BOOTSTRAP_PATH, CONFIG_PATH
    prefix = BOOTSTRAP_PATH if label == "bootstrap" else CONFIG_PATH
    # A TLS fetch may settle a resync: its line is written at once. Plain fetches settle
    # nothing and come by the ten thousand a second: theirs in batches.
    buffered = " buffer=64k flush=50ms" if label == "bootstrap" else ""
    folder = "bootstrap" if label == "bootstrap" else "tls/$autoprov_cert_mac"
    tries = " ".join(f"/$autoprov_published/{folder}/$autoprov_file.{ext}"
                     for ext in publish.CONTENT_EXTENSIONS.values())
    types = " ".join(f"{mime} {ext};" for mime, ext in publish.CONTENT_EXTENSIONS.items())
    return f"""        location ~ "^{prefix}(?<autoprov_file>{FILE_NAME})$" {{
            root {publish.root(settings)};
            types {{ {types} }}
            charset utf-8;
            charset_types {" ".join(publish.CONTENT_EXTENSIONS)};
            if_modified_since off;
            more_clear_headers Last-Modified;
            add_header Cache-Control "no-cache";
            access_log {fetch_log_path(settings)} autoprov_{label}{buffered};
            try_files {tries} @{label};
        }}
"""


def fetch_log_path(settings: Settings) -> Path:
    return socket_dir(settings) / "fetches.log"


def phone_tls(settings: Settings, client_ca: Path) -> str:
    """The TLS directives of the phones' TLS server (certificates, versions, client
    certificates, sessions); bench/nginx.py gives its baseline the same."""
    certs = "\n".join(f"        ssl_certificate {cert};\n        ssl_certificate_key {key};"
                      for cert, key in tls.server_pairs(settings))
    ciphers = "DEFAULT:@SECLEVEL=0" if settings.tls_min_version in ("1.0", "1.1") else "DEFAULT"
    return f"""{certs}
        ssl_protocols {_protocols(settings.tls_min_version)};
        ssl_ciphers {ciphers};
        ssl_client_certificate {client_ca};
        ssl_verify_client on;
        ssl_verify_depth 4;
        # TLS 1.3: one ticket per handshake is enough to resume for the next file (OpenSSL
        # sends two); TLS 1.2 resumes from tickets too. Ticket keys are made by the master
        # process, so every worker opens every ticket.
        ssl_session_tickets on;
        ssl_conf_command NumTickets 1;
        ssl_session_cache shared:phones:10m;"""


def config(settings: Settings) -> str:
    """nginx.conf for these settings."""
    run = socket_dir(settings)
    host = _host(settings.http_bind)
    tls_headers = (f"            proxy_set_header {VERIFY_HEADER} $ssl_client_verify;\n"
                   f"            proxy_set_header {SUBJECT_HEADER} $ssl_client_s_dn;")
    # Empty: not sent, and what a client sent under these names is not passed on either.
    plain_headers = (f"            proxy_set_header {VERIFY_HEADER} \"\";\n"
                     f"            proxy_set_header {SUBJECT_HEADER} \"\";")
    upstreams = "\n".join(f"""    upstream {label} {{
        server unix:{socket_path(settings, label)};
        keepalive {UPSTREAM_KEEPALIVE};
        keepalive_timeout {UPSTREAM_IDLE_S}s;
    }}""" for label in LABELS if label != "admin" or settings.admin_port)
    servers = f"""    server {{
        listen {host}:{settings.http_port} backlog={LISTEN_BACKLOG};
        client_max_body_size {PHONE_BODY_MAX};
{_firmware(settings)}{_published(settings, "bootstrap")}
{_proxied(settings, "bootstrap", plain_headers)}
    }}
    server {{
        listen {host}:{settings.https_port} ssl backlog={LISTEN_BACKLOG};
        client_max_body_size {PHONE_BODY_MAX};
{phone_tls(settings, run / "client-ca.pem")}
{_firmware(settings)}{_published(settings, "tls")}
{_proxied(settings, "tls", tls_headers)}
    }}
"""
    if settings.admin_port:
        cert, key = admin_server_files(settings)
        servers += f"""    server {{
        listen {host}:{settings.admin_port} ssl backlog={LISTEN_BACKLOG};
        client_max_body_size {ADMIN_BODY_MAX};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
{_proxied(settings, "admin", plain_headers, ADMIN_LARGE_BODIES)}
    }}
"""
    user = f"user {WORKER_USER};\n" if os.geteuid() == 0 else ""
    fields = "$msec $request_method $status $sent_http_etag $remote_addr $request_time " \
             "$autoprov_file \"$http_user_agent\""
    return f"""# Generated by autoprov/front.py from the settings; every start writes it anew.
load_module {HEADERS_MORE};
{user}worker_processes auto;
pcre_jit on;
pid {run / "nginx.pid"};
error_log stderr warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    server_tokens off;
    default_type text/plain;
    client_body_temp_path {run / "tmp/body"};
    proxy_temp_path {run / "tmp/proxy"};
    fastcgi_temp_path {run / "tmp/fastcgi"};
    uwsgi_temp_path {run / "tmp/uwsgi"};
    scgi_temp_path {run / "tmp/scgi"};
    # What a client may take of us: time to send its request, idle time between requests.
    client_header_timeout {settings.front_timeout_s}s;
    client_body_timeout {settings.front_timeout_s}s;
    send_timeout {settings.front_timeout_s}s;
    keepalive_timeout {settings.front_keepalive_s}s;
    reset_timedout_connection on;
    lingering_timeout 1s;
    lingering_time 2s;
    # The request line and each header line fit in front_max_header_kb (else 414 / 431).
    client_header_buffer_size 1k;
    large_client_header_buffers 4 {settings.front_max_header_kb}k;
    # Requests under way at once per client address (a site's phones behind one NAT share one).
    limit_conn_zone $binary_remote_addr zone=per_address:10m;
    limit_conn per_address {settings.front_connections_per_address};
    limit_conn_status 429;
    limit_conn_log_level info;
    # The app reads whole requests from the front only, and its answers are small: no disk.
    client_body_buffer_size 16k;
    proxy_max_temp_file_size 0;
    proxy_http_version 1.1;
    proxy_connect_timeout 5s;
    proxy_read_timeout 60s;
    proxy_next_upstream error;
    # The app's "Server: autoprov" (no software or version for scanners), not nginx's.
    proxy_pass_header Server;
    more_set_headers "Server: autoprov";
    # Which published files a request may be answered from (provisioning_wsgi/publish.py):
    # GET and HEAD only, from the folder of the MAC the client certificate's subject names
    # (a 12-digit token; a subject spelling it otherwise is checked by the app).
    map $request_method $autoprov_published {{
        GET {LIVE};
        HEAD {LIVE};
        default none;
    }}
    map $ssl_client_s_dn $autoprov_cert_mac {{
        "{CERT_MAC}" $autoprov_mac;
        default "-";
    }}
    log_format autoprov_bootstrap 'bootstrap {fields}';
    log_format autoprov_tls 'tls {fields}';
{upstreams}
{servers}}}
"""


def admin_server_files(settings: Settings) -> tuple[Path, Path]:
    # Production's phone-facing certificate is Cisco-signed, which no browser trusts.
    if settings.admin_tls_cert or settings.admin_tls_key:
        if not (settings.admin_tls_cert and settings.admin_tls_key):
            raise tls.TlsError("admin_tls_cert and admin_tls_key must be set together")
        return Path(settings.admin_tls_cert), Path(settings.admin_tls_key)
    return tls.server_files(settings)


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def write(settings: Settings) -> Path:
    """The socket folder, the client CAs in one file (nginx takes one) and nginx.conf."""
    run = prepare_socket_dir(settings)
    (run / "tmp").mkdir(exist_ok=True)
    bundle = b"".join(p.read_bytes().rstrip(b"\n") + b"\n" for p in tls.client_ca_files(settings))
    _replace(run / "client-ca.pem", bundle)
    conf = conf_path(settings)
    _replace(conf, config(settings).encode())
    checked = subprocess.run([nginx_binary(), "-t", "-q", "-e", "stderr", "-c", str(conf)],
                             capture_output=True, text=True, check=False)
    if checked.returncode != 0:
        raise FrontError(f"nginx refuses {conf}: {checked.stderr.strip()}")
    return conf


def _replace(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
        tmp.write(data)
    os.chmod(tmp.name, 0o600)
    os.replace(tmp.name, path)


def command(settings: Settings) -> list[str]:
    """nginx in the foreground on the written configuration (its messages on stderr)."""
    return [nginx_binary(), "-e", "stderr", "-c", str(conf_path(settings)), "-g", "daemon off;"]


def _probe_host(bind: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bind, bind)  # noqa: S104


def probe(settings: Settings, timeout: float = 1.0) -> str | None:
    """None once the front answers: HTTP on the plain port (the app behind it too), a TLS
    server on the phones' TLS port."""
    host = _probe_host(settings.http_bind)
    try:
        plain = http.client.HTTPConnection(host, settings.http_port, timeout=timeout)
        try:
            plain.request("GET", "/device/autoprov/bootstrap/")
            answer = plain.getresponse()
            answer.read()
            if answer.status >= 500:  # nginx's 502: the app is not there (yet)
                return f"HTTP {host}:{settings.http_port} answers {answer.status}"
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

    The handshake is never finished: a client that completes it without a certificate and
    asks for a file is refused, a WARNING "denied" line at every start of the stack."""
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
