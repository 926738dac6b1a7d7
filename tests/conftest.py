"""Real parts for the tests: a throwaway PostgreSQL cluster, Kamailio, on free ports."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from autoprov import db, front, stack, tls
from autoprov.config import ROOT, Settings
from autoprov.pgcluster import Cluster
from tests.ports import free_port
from tests.sipp import Phone

VENV_BIN = Path(ROOT, ".venv", "bin")
# The test proxy sends this model `Event: resync` (configuration overrides the vendor's form).
OVERRIDDEN_MODEL = "SPA525G"


def world_readable_tmpdir(prefix: str) -> Path:
    """A temp dir the postgres system user can reach (pytest's own are 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    base = world_readable_tmpdir("autoprov-pg-")
    cluster = Cluster(base / "pg", free_port(), durable=False)
    cluster.init()
    cluster.start()
    yield cluster
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def private_database(prefix: str) -> Iterator[tuple[Cluster, Settings]]:
    """A PostgreSQL cluster of the test's own, migrated, with settings on it: for tests that
    stop or restart the database (the shared one stays up for the others)."""
    base = world_readable_tmpdir(prefix)
    cluster = Cluster(base / "pg", free_port(), durable=False)
    cluster.init()
    cluster.start()
    try:
        settings = make_settings(base / "var", db_url=cluster.url())
        db.migrate(settings)
        yield cluster, settings
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def eventually(check: Any, timeout: float = 10.0) -> Any:
    """`check()`'s first true value within `timeout` seconds, else its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def make_settings(var_dir: Path, **overrides: Any) -> Settings:
    sip_port = free_port()
    values: dict[str, Any] = {
        "var_dir": var_dir,
        "sip_listen": (f"udp:127.0.0.1:{sip_port}", f"tcp:127.0.0.1:{sip_port}"),
        "sip_children": 2,
        "sip_shm_mb": 64,
        "http_port": free_port(),
        "https_port": free_port(),
        "admin_port": free_port(),
    }
    values.update(overrides)
    settings = Settings(**values)
    for path in (settings.run_dir, settings.log_dir):
        path.mkdir(parents=True, exist_ok=True)
    return settings


@contextlib.contextmanager
def own_database(pg_cluster: Cluster, prefix: str) -> Iterator[str]:
    """A database of a test's own (no other test's jobs or workers in it); yields its URL and
    drops it after."""
    name = prefix + secrets.token_hex(4)
    admin = pg_cluster.url()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def settings(pg_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    s = make_settings(tmp_path_factory.mktemp("var"), db_url=pg_cluster.url(),
                      notify_event_overrides=(f"{OVERRIDDEN_MODEL}=resync",))
    db.migrate(s)
    return s


@pytest.fixture
def conn(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(settings, autocommit=True) as connection:
        yield connection


@dataclass
class RunningService:
    service: stack.Service
    log_path: Path
    # Started with it and stopped with it (the web front of the provisioning service).
    companions: tuple[stack.Service, ...] = ()
    # Removed once stopped (as root, the front's folder under /run).
    leftovers: tuple[Path, ...] = ()

    def stop(self) -> None:
        for companion in reversed(self.companions):
            stack.stop(companion)
        stack.stop(self.service)
        for path in self.leftovers:
            shutil.rmtree(path, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if needle in text:
                return text
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} not in {self.service.name} log")


def start_service(service: stack.Service, log_path: Path) -> RunningService:
    stack.spawn(service, log_path)
    try:
        stack.wait_ready(service, time.monotonic() + 30)
    except stack.StackError:
        stack.stop(service)
        raise AssertionError(f"{service.name} did not start:\n{log_path.read_text()[-3000:]}")\
            from None
    return RunningService(service, log_path)


def start_kamailio(settings: Settings, code_root: Path = ROOT) -> RunningService:
    (kam,) = [s for s in stack.services(settings, code_root) if s.name == "kamailio"]
    return start_service(kam, settings.log_dir / "kamailio.log")


@pytest.fixture
def own_kamailio(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, RunningService]]:
    """A Kamailio of the test's own (its own ports, var/ and log) on the shared database: for
    tests that kill it, flood it or read its whole log."""
    own = make_settings(tmp_path / "var", db_url=settings.db_url)
    running = start_kamailio(own)
    yield own, running
    stack.stop(running.service)


@contextlib.contextmanager
def own_proxy(settings: Settings, tmp_path: Path, server_id: int, *sip_listen: str,
              **overrides: Any) -> Iterator[Settings]:
    """A Kamailio of the test's own on the shared database, with these sockets. `server_id`:
    a node id no other test's proxy has: each proxy sends the NOTIFYs of the bindings with its
    own id, so a shared one would let another test's proxy take them."""
    own = make_settings(tmp_path / "var", db_url=settings.db_url, sip_server_id=server_id,
                        sip_listen=sip_listen, **overrides)
    started = []
    try:
        # The media relay first, as the stack starts it (when rtpengine_socket and rtpengine_run
        # say so): Kamailio's rtpengine module pings it at start.
        for relay in [s for s in stack.services(own) if s.name == "rtpengine"]:
            started.append(start_service(relay, own.log_dir / "rtpengine.log"))
        started.append(start_kamailio(own))
        yield own
    finally:
        for running in reversed(started):
            running.stop()


@pytest.fixture(scope="session")
def kamailio(settings: Settings) -> Iterator[RunningService]:
    running = start_kamailio(settings)
    yield running
    stack.stop(running.service)


def start_provisioning(settings: Settings) -> RunningService:
    """`autoprov serve` and its web front on the settings' free ports, with development TLS
    material, as `make run` starts them; stop() stops both."""
    tls.ensure_dev_material(settings)
    services = {s.name: s for s in stack.services(settings)}
    running = start_service(services["provisioning"], settings.log_dir / "provisioning.log")
    try:
        start_service(services["front"], settings.log_dir / "front.log")
    except AssertionError:
        running.stop()
        raise
    running.companions = (services["front"],)
    running.leftovers = (front.socket_dir(settings),)
    return running


@pytest.fixture(scope="session")
def provisioning(settings: Settings) -> Iterator[RunningService]:
    running = start_provisioning(settings)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def sip_proxy(settings: Settings) -> tuple[str, int]:
    proto_host_port = settings.sip_listen[0].split(":")
    return proto_host_port[1], int(proto_host_port[2])


@dataclass
class Subscriber:
    username: str
    domain: str
    password: str

    @property
    def aor(self) -> str:
        return f"{self.username}@{self.domain}"


@pytest.fixture
def new_subscriber(conn: psycopg.Connection[Any]) -> Any:
    """Factory: a fresh SIP account (unique per test, so tests never share bindings)."""

    def make(domain: str = "example.test", password: str | None = None) -> Subscriber:
        sub = Subscriber("u" + secrets.token_hex(5), domain, password or secrets.token_hex(8))
        conn.execute(
            "INSERT INTO subscriber (username, domain, password) VALUES (%s, %s, %s)",
            (sub.username, sub.domain, sub.password),
        )
        return sub

    return make


@pytest.fixture
def phone_for(sip_proxy: tuple[str, int]) -> Any:
    def make(sub: Subscriber, transport: str = "udp", password: str | None = None) -> Phone:
        return Phone(sub.username, sub.domain, password or sub.password, sip_proxy, transport)

    return make


def random_mac() -> str:
    return "0015" + secrets.token_hex(4)


def autoprov_cli(settings: Settings, *args: str, check: bool = False,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed `autoprov` command as a user would, against the test settings."""
    env = dict(os.environ)
    env.update(settings.as_env())
    env["AUTOPROV_CONFIG"] = str(settings.var_dir / "no-such-config.toml")
    return subprocess.run([str(VENV_BIN / "autoprov"), *args], env=env, capture_output=True,
                          text=True, check=check, timeout=timeout)
