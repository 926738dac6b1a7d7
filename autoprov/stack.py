"""`make run`, `up`, `down`, `purge`: the database, Kamailio and the web service together."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psycopg

from autoprov import db, front, kamailio, logpipe, pgcluster, rtpengine, sipprobe, tls
from autoprov.config import ROOT, Settings
from provisioning_wsgi import server as provisioning

READY_TIMEOUT = 30.0


class StackError(RuntimeError):
    """A part of the stack failed to start; the message names it."""


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    # Returns None when the service answers, else what is still wrong.
    probe: Callable[[], str | None]
    # Kamailio's JSON log: written anywhere, it goes through autoprov.logpipe, which makes each
    # record one safe dated line. Other services' files go through it too, for rotation.
    timestamp_log: bool = False
    # (max bytes, files kept) of its log file; 0 bytes: never rotated.
    log_rotation: tuple[int, int] = (0, 0)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_pipe: subprocess.Popen[bytes] | None = field(default=None, repr=False)


def _probe_sip(settings: Settings) -> str | None:
    for address in settings.sip_listen:
        proto, host, port = sipprobe.parse_listen(address)
        if proto not in ("udp", "tcp"):
            continue
        try:
            sipprobe.options(proto, host, port, timeout=1.0)
        except (OSError, ValueError) as exc:
            return f"SIP {address} does not answer ({exc})"
    return None


def services(settings: Settings, code_root: Path = ROOT) -> list[Service]:
    rotation = (settings.log_max_mb * 1024 * 1024, settings.log_keep)
    found = _services(settings, code_root)
    for service in found:
        service.log_rotation = rotation
    return found


def _services(settings: Settings, code_root: Path) -> list[Service]:
    return [
        *_media_relay(settings),
        Service(
            "kamailio",
            # Supervised: Kamailio stops all its processes when one dies; this restarts it.
            [sys.executable, "-m", "autoprov.supervise", "kamailio", "--",
             *kamailio.command(settings, code_root)],
            kamailio.environment(settings, code_root),
            lambda: _probe_sip(settings),
            timestamp_log=True,
        ),
        Service(
            "provisioning",
            provisioning.command(settings, code_root),
            provisioning.environment(settings, code_root),
            lambda: provisioning.probe(settings),
        ),
        # After the service: nginx answers 502 until the service's sockets are there.
        Service(
            "front",
            [sys.executable, "-m", "autoprov.cli", "front", "run"],
            provisioning.environment(settings, code_root),
            lambda: front.probe(settings),
        ),
    ]


def _media_relay(settings: Settings) -> list[Service]:
    """rtpengine, when calls' media is relayed (rtpengine_socket) and it runs with the stack;
    supervised like Kamailio: a relay that died comes back by itself."""
    if not (settings.rtpengine_socket and settings.rtpengine_run):
        return []
    return [Service(
        "rtpengine",
        [sys.executable, "-m", "autoprov.supervise", "rtpengine", "--",
         *rtpengine.command(settings)],
        dict(os.environ),
        lambda: rtpengine.probe(settings),
    )]


def _probe_db(settings: Settings) -> str | None:
    try:
        with db.connect(settings) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"database does not answer ({str(exc).strip()})"
    return None


def prepare(settings: Settings) -> bool:
    """Directories, the private cluster (if used) and the schema. True if we started the cluster."""
    for path in (settings.var_dir, settings.run_dir, settings.log_dir):
        path.mkdir(parents=True, exist_ok=True)
    tls.ensure_dev_material(settings)
    started = False
    if not settings.db_url:
        cluster = db.private_cluster(settings)
        cluster.init()
        pgcluster.leave_pointer(settings.var_dir, cluster.base)
        if not cluster.running():
            cluster.start()
            started = True
    problem = _probe_db(settings)
    if problem:
        raise StackError(problem)
    db.migrate(settings)
    return started


def spawn(service: Service, log: int | IO[bytes] | Path | None = None) -> None:
    """Start a service in its own process group (so stopping it stops its children), its output
    to `log` (a Path: appended to that file, through a log pipe if the service needs one)."""
    if isinstance(log, Path) or (log is None and service.timestamp_log):
        _spawn_with_log_pipe(service, log)
        return
    service.process = subprocess.Popen(
        service.argv, env=service.env, stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        stdin=subprocess.DEVNULL, start_new_session=True, cwd=ROOT,
    )


def _log_pipe_args(service: Service, log: Path | None) -> list[str]:
    args = [sys.executable, "-m", "autoprov.logpipe",
            "--kamailio" if service.timestamp_log else "--as-is"]
    if log is not None and service.log_rotation[0] > 0:
        args += ["--max-bytes", str(service.log_rotation[0]),
                 "--keep", str(service.log_rotation[1])]
    return [*args, str(log) if log is not None else "-"]


def _spawn_with_log_pipe(service: Service, log: Path | None) -> None:
    """`log` None: the terminal (`autoprov run`)."""
    # One new process group, led by the service (its pid is the one pid files and stop() use),
    # with the pipe in it: stopping the group stops both, and the pipe drains what is left. Not a
    # new session: a process can only join a group in its own session.
    errors_to = log if log is not None else Path("/dev/stderr")
    with errors_to.open("ab") as errors:  # fails here, not in the pipe, if it is not writable
        service.process = subprocess.Popen(
            service.argv, env=service.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, process_group=0, cwd=ROOT,
        )
        assert service.process.stdout is not None
        # The pipe starts with the stop signals blocked (a child inherits the mask) and unblocks
        # them once it ignores them: a stop right after this returns must not kill it first.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, logpipe.STOP_SIGNALS)
        try:
            service.log_pipe = subprocess.Popen(
                _log_pipe_args(service, log), env=service.env,
                stdin=service.process.stdout,
                stdout=subprocess.DEVNULL if log is not None else None, stderr=errors,
                process_group=service.process.pid, cwd=ROOT,
            )
        except BaseException:
            _stop_process(service.process.pid)
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            service.process.stdout.close()


def stop(service: Service) -> None:
    if service.process is not None:
        _stop_process(service.process.pid)
        service.process.wait()
    if service.log_pipe is not None:
        service.log_pipe.wait()


def wait_ready(service: Service, deadline: float) -> None:
    problem: str | None = "not probed"
    while time.monotonic() < deadline:
        if service.process is not None and service.process.poll() is not None:
            raise StackError(f"{service.name} exited with status {service.process.returncode}")
        problem = service.probe()
        if problem is None:
            return
        time.sleep(0.2)
    raise StackError(f"{service.name} not ready after {READY_TIMEOUT:.0f}s: {problem}")


def _stop_process(pid: int, timeout: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):  # reap ours in the group (service, log pipe)
            while os.waitpid(-pid, os.WNOHANG)[0]:
                pass
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _pid_file(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.up.pid"


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


def up(settings: Settings) -> None:
    """Start everything in the background; return once every part answers."""
    prepare(settings)
    deadline = time.monotonic() + READY_TIMEOUT
    for service in services(settings):
        pid_file = _pid_file(settings, service.name)
        if _alive(pid_file):
            wait_ready(service, deadline)
            print(f"{service.name}: already running")
            continue
        spawn(service, settings.log_dir / f"{service.name}.log")
        assert service.process is not None
        pid_file.write_text(str(service.process.pid))
        try:
            wait_ready(service, deadline)
        except StackError:
            print(f"{service.name}: see {settings.log_dir / (service.name + '.log')}",
                  file=sys.stderr)
            down(settings)
            raise
        print(f"{service.name}: up (pid {service.process.pid})")


def down(settings: Settings) -> None:
    """Stop what `up` started and this checkout's private cluster; never an external database."""
    for pid_file in sorted(settings.run_dir.glob("*.up.pid"), reverse=True):
        pid = _alive(pid_file)
        if pid:
            _stop_process(pid)
            print(f"{pid_file.name.removesuffix('.up.pid')}: stopped")
        pid_file.unlink(missing_ok=True)
    if not settings.db_url:
        cluster = db.private_cluster(settings)
        if cluster.running():
            cluster.stop()
            print("database: stopped")


def purge(settings: Settings) -> None:
    """`down`, then delete this checkout's private cluster (wherever it lives) and var_dir."""
    var_dir = settings.var_dir.resolve()
    if ROOT.is_relative_to(var_dir):
        raise StackError(f"var_dir {var_dir} holds the code itself: not removing it")
    down(settings)
    cluster = db.private_cluster(settings)
    if cluster.running():  # down leaves it running only when db_url is set: it may be in use
        raise StackError(f"db_url is set and this checkout's private cluster is running: "
                         f"not removing it (stop it with pg_ctl -D {cluster.data} stop)")
    if cluster.base.exists():
        shutil.rmtree(cluster.base)
        print(f"database: removed {cluster.base}")
    sockets = front.socket_dir(settings)
    if sockets.exists() and not sockets.is_relative_to(var_dir):
        shutil.rmtree(sockets)
        print(f"front: removed {sockets}")
    if var_dir.exists():
        shutil.rmtree(var_dir)
        print(f"removed {var_dir}")


@contextlib.contextmanager
def _signals_to_exit() -> Iterator[None]:
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(settings: Settings) -> int:
    """Everything in the foreground until Ctrl-C; then stop every part cleanly."""
    started_cluster = prepare(settings)
    running: list[Service] = []
    try:
        with _signals_to_exit():
            deadline = time.monotonic() + READY_TIMEOUT
            for service in services(settings):
                spawn(service)
                running.append(service)
                wait_ready(service, deadline)
            print("autoprov: running; Ctrl-C stops it", flush=True)
            while all(s.process is not None and s.process.poll() is None for s in running):
                time.sleep(0.5)
            failed = [s.name for s in running if s.process and s.process.poll() is not None]
            print(f"autoprov: {', '.join(failed)} exited; stopping", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("autoprov: stopping", flush=True)
        return 0
    finally:
        for service in reversed(running):
            stop(service)
        if started_cluster:
            db.private_cluster(settings).stop()
