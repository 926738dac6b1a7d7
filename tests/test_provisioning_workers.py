"""`autoprov serve` from several processes: shared sockets, a dead worker replaced, clean stops,
and the TLS port's two certificates (ECDSA for phones that offer it, RSA for the others)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from autoprov import front, tls
from autoprov.config import Settings
from provisioning_wsgi import publish
from tests.conftest import VENV_BIN, RunningService, make_settings, start_provisioning
from tests.provisioning_helpers import (
    add_device,
    app_workers,
    bootstrap_url,
    children,
    client,
    config_url,
    device_file,
    fetches,
    phone_cert,
    publisher_pid,
)


def _eventually(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def two_workers(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, RunningService]]:
    own = make_settings(tmp_path / "var", db_url=settings.db_url, http_workers=2)
    running = start_provisioning(own)
    yield own, running
    running.stop()


def test_two_workers_serve_the_same_ports_and_record_their_fetches(
    two_workers: tuple[Settings, RunningService], settings: Settings,
    conn: psycopg.Connection[Any], new_subscriber: Any, tmp_path: Path,
) -> None:
    own, running = two_workers
    pid = running.service.process.pid
    running.wait_for_log("INFO published the files of", timeout=60)
    assert len(app_workers(pid, running.log())) == 2
    mac = add_device(conn, "yealink", [new_subscriber()])
    # The app alone: the front finds no published file (the publisher paused meanwhile).
    os.kill(publisher_pid(running.log()), signal.SIGSTOP)
    (publish.root(own) / publish.LIVE).unlink()
    cert = phone_cert(own, tmp_path, "yealink", mac)
    for _ in range(20):  # a new connection each: the kernel spreads them over the workers
        reply = client(own, cert).get(config_url(own, device_file("yealink", mac)))
        assert reply.status_code == 200
        plain = client(own).get(bootstrap_url(own, device_file("yealink", mac)))
        assert plain.status_code == 200
    ports = [row[0] for row in fetches(conn, mac)]
    served_by: dict[str, set[str]] = {"tls": set(), "bootstrap": set()}
    for line in running.log().splitlines():
        if f"device={mac}" in line:
            worker = line.split("autoprov-provisioning[", 1)[1].split("]", 1)[0]
            served_by[line.split(" port=", 1)[1].split(" ", 1)[0]].add(worker)
    assert served_by["tls"] | served_by["bootstrap"] <= \
        {str(p) for p in app_workers(pid, running.log())}
    assert served_by["tls"] and served_by["bootstrap"], "no access line names the device"
    assert ports.count("tls") == 20  # every TLS fetch, whichever worker answered it
    # A plain fetch repeated within seconds: recorded once by each worker that answered it.
    assert ports.count("bootstrap") == len(served_by["bootstrap"])


def test_a_killed_worker_is_replaced_and_the_service_keeps_answering(
    two_workers: tuple[Settings, RunningService], conn: psycopg.Connection[Any],
    new_subscriber: Any,
) -> None:
    own, running = two_workers
    mac = add_device(conn, "yealink", [new_subscriber()])
    pid = running.service.process.pid
    running.wait_for_log("INFO published the files of", timeout=60)
    before = app_workers(pid, running.log())
    victim = min(before)
    os.kill(victim, signal.SIGKILL)

    after = _eventually(lambda: (c := app_workers(pid, running.log())) and len(c) == 2
                        and victim not in c and c, 10, "a new worker")
    assert len(after - before) == 1
    running.wait_for_log(f"(pid {victim}) exited (signal SIGKILL); starting it again")
    for _ in range(10):
        assert client(own).get(bootstrap_url(own, device_file("yealink", mac))).status_code \
            == 200


def test_sigterm_stops_every_worker_and_removes_the_sockets(
    settings: Settings, tmp_path: Path,
) -> None:
    own = make_settings(tmp_path / "var", db_url=settings.db_url, http_workers=2)
    running = start_provisioning(own)
    pid = running.service.process.pid
    running.wait_for_log("INFO published the files of", timeout=60)
    workers = children(pid)
    assert len(app_workers(pid, running.log())) == 2 and len(workers) == 3

    os.kill(pid, signal.SIGTERM)  # the parent alone, as a supervisor would
    assert running.service.process.wait(timeout=30) == 0
    for worker in workers:
        assert not Path(f"/proc/{worker}").exists() or \
            "zombie" in Path(f"/proc/{worker}/status").read_text()
    log = running.log()
    assert "worker 0 stopped" in log and "worker 1 stopped" in log
    assert not (publish.root(own) / publish.LIVE).exists()  # the front asks the app
    assert not any(front.socket_path(own, label).exists() for label in front.LABELS)
    running.stop()  # the front
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", own.https_port))  # free again


def test_a_taken_port_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    own = make_settings(tmp_path / "var", db_url=settings.db_url)
    tls.ensure_dev_material(own)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", own.https_port))
        taken.listen()
        env = {**os.environ, **own.as_env(), "AUTOPROV_CONFIG": str(tmp_path / "none.toml")}
        done = subprocess.run([str(VENV_BIN / "autoprov"), "front", "run"], env=env,
                              capture_output=True, text=True, timeout=30, check=False)
    shutil.rmtree(front.socket_dir(own))  # as root, under /run
    assert done.returncode != 0
    assert f"bind() to 127.0.0.1:{own.https_port} failed (98: Address already in use)" \
        in done.stderr


def test_a_second_service_on_the_same_sockets_is_a_clear_error(
    two_workers: tuple[Settings, RunningService], tmp_path: Path,
) -> None:
    own, _ = two_workers
    env = {**os.environ, **own.as_env(), "AUTOPROV_CONFIG": str(tmp_path / "none.toml")}
    done = subprocess.run([str(VENV_BIN / "autoprov"), "serve"], env=env,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode != 0
    assert f"another instance serves {front.socket_path(own, 'bootstrap')}" in done.stderr
    assert "Traceback" not in done.stderr
    assert client(own).get(bootstrap_url(own, "y000000000108.cfg")).status_code == 200


@pytest.mark.parametrize(("sigalgs", "key_type"), [
    ("ECDSA+SHA256", "ECDSA"),
    ("RSA-PSS+SHA256:RSA+SHA256", "RSA"),  # what old Cisco SPA firmware offers
])
def test_tls_port_offers_ecdsa_and_falls_back_to_rsa(
    provisioning: RunningService, settings: Settings, tmp_path: Path, sigalgs: str,
    key_type: str,
) -> None:
    cert, key = phone_cert(settings, tmp_path, "cisco", "708105b37234")
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{settings.https_port}", "-tls1_2",
         "-sigalgs", sigalgs, "-cert", str(cert), "-key", str(key)],
        input="", capture_output=True, text=True, timeout=30, check=False)
    assert f"Peer signature type: {key_type}" in done.stdout, done.stdout[-2000:]


def test_the_readiness_probe_leaves_no_warning_in_the_log(
    two_workers: tuple[Settings, RunningService],
) -> None:
    """`make up` probes the ports at every start: an operator's alerting must not read that
    as a refused client."""
    own, running = two_workers
    text = running.wait_for_log("access client=127.0.0.1 port=bootstrap")
    assert " WARNING " not in text
    assert "denied" not in text
    assert (own.log_dir / "front.log").read_text() == ""


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    return inodes


def _tcp_listening_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    return inodes


def test_behind_the_front_the_service_listens_on_no_tcp_port(
    two_workers: tuple[Settings, RunningService],
) -> None:
    """Only nginx's workers can reach the service (its unix sockets): nothing on the network can
    bypass the front's limits or set the headers the service trusts."""
    own, running = two_workers
    pid = running.service.process.pid
    service_sockets = set().union(*(_socket_inodes(p) for p in {pid, *children(pid)}))

    assert service_sockets
    assert not service_sockets & _tcp_listening_inodes()
    assert all(front.socket_path(own, label).is_socket() for label in front.LABELS)
