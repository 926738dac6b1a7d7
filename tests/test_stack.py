"""`make up` / `make down` / `make run` as an operator uses them, with a private cluster."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoprov import db, sipprobe
from autoprov.config import Settings
from autoprov.pgcluster import Cluster
from tests.conftest import VENV_BIN, autoprov_cli, make_settings, world_readable_tmpdir
from tests.ports import free_port


@pytest.fixture
def own_stack() -> Iterator[Settings]:
    """Settings for a whole private stack: its own var/ (in a 0700 folder), cluster and ports."""
    base = Path(tempfile.mkdtemp(prefix="autoprov-stack-"))
    settings = make_settings(base / "var", db_port=free_port())
    cluster = db.private_cluster(settings)
    yield settings
    autoprov_cli(settings, "purge")
    cluster.stop()
    shutil.rmtree(cluster.base, ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)


def sip_answers(settings: Settings) -> bool:
    try:
        for address in settings.sip_listen:
            sipprobe.options(*sipprobe.parse_listen(address), timeout=0.5)
    except OSError:
        return False
    return True


def test_up_is_ready_when_it_returns_is_repeatable_and_down_stops_it(own_stack: Settings) -> None:
    first = autoprov_cli(own_stack, "up", timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    assert sip_answers(own_stack)
    cluster = db.private_cluster(own_stack)
    assert cluster.running()
    assert autoprov_cli(own_stack, "db", "url").stdout.strip() == cluster.url()

    second = autoprov_cli(own_stack, "up", timeout=120)
    assert second.returncode == 0, second.stderr
    assert "already running" in second.stdout

    down = autoprov_cli(own_stack, "down")
    assert down.returncode == 0, down.stderr
    assert not sip_answers(own_stack)
    assert not cluster.running()


def test_up_says_which_part_failed(own_stack: Settings) -> None:
    _, host, port = sipprobe.parse_listen(own_stack.sip_listen[0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((host, port))  # the SIP port is taken: Kamailio cannot start
        result = autoprov_cli(own_stack, "up", timeout=120)
    assert result.returncode != 0
    assert "kamailio" in result.stderr
    assert not db.private_cluster(own_stack).running()


def test_run_in_the_foreground_stops_every_part_on_ctrl_c(own_stack: Settings) -> None:
    env = dict(os.environ, **own_stack.as_env(), AUTOPROV_CONFIG="/nonexistent.toml")
    proc = subprocess.Popen([str(VENV_BIN / "autoprov"), "run"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            if "Ctrl-C stops it" in line:
                break
            assert time.monotonic() < deadline
        # Keep reading what the stack prints (as a terminal would): a full pipe would block
        # the services' log writes, and their shutdown with them.
        drain = threading.Thread(target=proc.stdout.read, daemon=True)
        drain.start()
        assert sip_answers(own_stack)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not sip_answers(own_stack)
    assert not db.private_cluster(own_stack).running()
    assert not Path(own_stack.run_dir, "kamailio.up.pid").exists()


def test_down_stops_the_checkouts_database_whoever_started_it(own_stack: Settings) -> None:
    cluster = db.private_cluster(own_stack)
    cluster.init()
    cluster.start()  # as a `make run` killed with SIGKILL leaves it

    down = autoprov_cli(own_stack, "down")

    assert down.returncode == 0, down.stderr
    assert "database: stopped" in down.stdout
    assert not cluster.running()


def test_down_never_stops_an_external_database(own_stack: Settings) -> None:
    cluster = db.private_cluster(own_stack)
    cluster.init()
    cluster.start()
    external = own_stack.replace(db_url=cluster.url())  # the same server, named by db_url

    assert autoprov_cli(external, "down").returncode == 0
    assert cluster.running()
    purge = autoprov_cli(external, "purge")
    assert purge.returncode != 0
    assert "not removing it" in purge.stderr
    assert cluster.running()
    assert cluster.initialized()


def test_a_cluster_already_in_var_pg_keeps_being_used_and_purge_removes_it() -> None:
    base = world_readable_tmpdir("autoprov-legacy-")  # the postgres user reaches var/pg there
    try:
        settings = make_settings(base / "var", db_port=free_port())
        legacy = Cluster(settings.var_dir / "pg", settings.db_port, durable=False)
        legacy.init()

        url = autoprov_cli(settings, "db", "url")
        assert url.returncode == 0, url.stderr
        assert url.stdout.strip() == legacy.url()

        purge = autoprov_cli(settings, "purge")
        assert purge.returncode == 0, purge.stderr
        assert not settings.var_dir.exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)
