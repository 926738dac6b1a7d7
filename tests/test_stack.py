"""`make up` / `make down` / `make run` as an operator uses them, with a private cluster."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoprov import sipprobe
from autoprov.config import Settings
from autoprov.pgcluster import Cluster
from tests.conftest import VENV_BIN, autoprov_cli, make_settings, world_readable_tmpdir
from tests.ports import free_port


@pytest.fixture
def own_stack() -> Iterator[Settings]:
    """Settings for a whole private stack: its own var/, database cluster and ports."""
    base = world_readable_tmpdir("autoprov-stack-")
    settings = make_settings(base / "var", db_port=free_port())
    yield settings
    autoprov_cli(settings, "down")
    Cluster(settings.pg_dir, settings.db_port).stop()
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
    cluster = Cluster(own_stack.pg_dir, own_stack.db_port)
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
    assert not Cluster(own_stack.pg_dir, own_stack.db_port).running()


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
        assert sip_answers(own_stack)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not sip_answers(own_stack)
    assert not Cluster(own_stack.pg_dir, own_stack.db_port).running()
    assert not Path(own_stack.run_dir, "kamailio.up.pid").exists()
