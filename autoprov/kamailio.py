"""Running Kamailio from autoprov's configuration, and talking to it over JSON-RPC."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

from autoprov import db, logpipe, tls
from autoprov.config import ROOT, Settings

RPC_TIMEOUT = 5.0


class RpcError(RuntimeError):
    """Kamailio did not answer the RPC, or answered with an error."""


def python_path(code_root: Path = ROOT) -> str:
    """Kamailio's embedded interpreter does not see the venv: hand it our packages explicitly."""
    paths = dict.fromkeys([str(code_root), str(ROOT), sysconfig.get_paths()["purelib"]])
    return os.pathsep.join(paths)


def site_cfg(settings: Settings, main: Path | None = None,
             name: str = "kamailio-site.cfg") -> Path:
    """Write the config Kamailio starts from: the database URL, then kamailio.cfg (or `main`,
    e.g. the benchmark's native script).

    The URL (its password) is in a file only Kamailio's user can read, not on the command line,
    which every local user sees in `ps`.
    """
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    path = settings.run_dir / name
    url = db.kamailio_url(db.url(settings)).replace("\\", "\\\\").replace('"', '\\"')
    included = (main or settings.kamailio_cfg).resolve()
    text = f'#!define DBURL "{url}"\n'
    if any(address.lower().startswith("tls:") for address in settings.sip_listen):
        text += f'#!define WITH_TLS 1\n#!define TLS_CONFIG "{_tls_config(settings)}"\n'
    if settings.rtpengine_socket:
        text += (f'#!define WITH_RTPENGINE 1\n'
                 f'#!define RTPENGINE_SOCK "{settings.rtpengine_socket}"\n')
    text += f'include_file "{included}"\n'
    fd, temp = tempfile.mkstemp(prefix=".kamailio-site.", dir=settings.run_dir)  # mode 0600
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.replace(temp, path)
    return path


# tls_min_version as the tls module writes it (its `method`).
_TLS_METHODS = {"1.0": "TLSv1+", "1.1": "TLSv1.1+", "1.2": "TLSv1.2+", "1.3": "TLSv1.3"}


def _tls_config(settings: Settings) -> Path:
    """The tls module's profiles for `tls:` SIP sockets: our server certificate (the one the
    HTTPS port uses, development material made when none is configured), tls_min_version."""
    tls.ensure_dev_material(settings)
    cert, key = tls.server_files(settings)
    method = _TLS_METHODS.get(settings.tls_min_version, "TLSv1.2+")
    # Phones show no client certificate to a SIP server; the proxy authenticates them by digest.
    text = (f"[server:default]\nmethod = {method}\nverify_certificate = no\n"
            f"require_certificate = no\ncertificate = {cert.resolve()}\n"
            f"private_key = {key.resolve()}\n\n"
            f"[client:default]\nmethod = {method}\nverify_certificate = no\n"
            f"require_certificate = no\n")
    path = settings.run_dir / "kamailio-tls.cfg"
    path.write_text(text)
    return path


PIKE_MAX = 65535


def command(settings: Settings, code_root: Path = ROOT) -> list[str]:
    """The Kamailio command line for these settings (foreground, logging to stderr), with the
    config it starts from written."""
    kemi_script = code_root / "kemi" / "handler.py"
    product = "".join(c for c in settings.sip_server_header if c.isprintable() and c not in '"\\')
    cmd = [
        settings.kamailio_binary,
        "-f", str(site_cfg(settings)),
        "-DD", "-E",
        # One JSON line per record, client bytes escaped (autoprov/logpipe.py makes it text).
        "--log-engine=json:M",
        "-n", str(settings.sip_children),
        "-m", str(settings.sip_shm_mb),
        # TLSF instead of the default q_malloc: about a fifth less CPU per REGISTER (BENCHMARKS.md).
        "-x", "tlsf", "-X", "tlsf",
        f"--debug={settings.sip_debug}",
        "-Y", str(settings.run_dir),
        "-P", str(settings.run_dir / "kamailio.pid"),
        "-A", f'KEMI_SCRIPT="{kemi_script}"',
        "-A", f'RPC_SOCKET="{settings.rpc_socket}"',
        "-A", f"SERVER_ID={settings.sip_server_id}",
        # pike counts in 16 bits: a larger limit would wrap round to a small one.
        "-A", f"PIKE_PER_2S={min(settings.sip_pike_per_2s, PIKE_MAX)}",
        "-A", f'SERVER_HEADER="Server: {product}"',
        "-A", f'USER_AGENT_HEADER="User-Agent: {product}"',
    ]
    for address in settings.sip_listen:
        cmd += ["-l", address]
    return cmd


def environment(settings: Settings, code_root: Path = ROOT,
                base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update(settings.as_env())
    for field in dataclasses.fields(settings):
        if not field.repr:  # secrets the proxy has no use for stay out of its environment
            env.pop("AUTOPROV_" + field.name.upper(), None)
    env["AUTOPROV_DB_URL"] = db.url(settings)
    env["PYTHONPATH"] = python_path(code_root)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(settings: Settings) -> NoReturn:
    """Become Kamailio, in the foreground (systemd's ExecStart), its JSON log made text lines on
    stdout (the journal) by autoprov's log pipe, a child of Kamailio's main process: it exits
    when Kamailio's last process has closed the pipe, and ignores the stop signals until then."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    argv = command(settings)
    env = environment(settings)
    read_end, write_end = os.pipe()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, logpipe.STOP_SIGNALS)
    if os.fork() == 0:  # the log pipe; starts with the stop signals blocked, as in the stack
        os.dup2(read_end, 0)
        os.close(read_end)
        os.close(write_end)
        pipe_argv = [sys.executable, "-m", "autoprov.logpipe", "--kamailio", "-"]
        os.execve(sys.executable, pipe_argv, env)  # noqa: S606 (our own argv)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(read_end)
    os.close(write_end)
    os.execvpe(argv[0], argv, env)  # noqa: S606 (our own argv)


@contextlib.contextmanager
def _reply_socket(settings: Settings) -> Iterator[socket.socket]:
    """A datagram socket for the proxy's reply, bound where the proxy can reach and write to it.

    Beside the proxy's own socket rather than in /tmp: under systemd the proxy has a private
    /tmp. When root calls a proxy running as its service user, that user gets the socket.
    """
    proxy_user = os.stat(settings.rpc_socket).st_uid
    folder = tempfile.mkdtemp(prefix="rpc-", dir=settings.run_dir)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            path = os.path.join(folder, "reply.sock")
            sock.bind(path)
            if os.geteuid() == 0 and proxy_user != 0:
                os.chown(folder, proxy_user, -1)
                os.chown(path, proxy_user, -1)
            yield sock
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def rpc(settings: Settings, method: str, *params: Any, timeout: float = RPC_TIMEOUT) -> Any:
    """Call a Kamailio RPC over the jsonrpcs datagram socket and return its result."""
    request = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1})
    not_running = RpcError(f"Kamailio is not running (no RPC socket {settings.rpc_socket})")
    try:
        with _reply_socket(settings) as sock:
            sock.settimeout(timeout)
            sock.sendto(request.encode(), str(settings.rpc_socket))
            data, _ = sock.recvfrom(4 * 1024 * 1024)
    except (FileNotFoundError, ConnectionRefusedError):
        raise not_running from None
    except TimeoutError:
        raise RpcError(f"Kamailio did not answer {method} within {timeout}s") from None
    answer = json.loads(data)
    if "error" in answer:
        raise RpcError(f"{method}: {answer['error'].get('message', answer['error'])}")
    return answer.get("result")


def reload_kemi(settings: Settings) -> None:
    """Make every worker re-import the KEMI package on its next message."""
    rpc(settings, "app_python.reload")
