"""A fresh clone in a folder only its owner can enter (a home such as /root) runs the stack."""

from __future__ import annotations

import http.client
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from autoprov import db, pgcluster
from autoprov.config import ROOT, Settings
from provisioning_wsgi import vendors
from tests.ports import free_port
from tests.test_stack import sip_answers


@dataclass
class Clone:
    path: Path
    env: dict[str, str]
    # What the clone's `autoprov` reads from the same environment, for probing from here.
    settings: Settings

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The clone's own code, run with the repository's venv, as an operator would."""
        return subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "autoprov.cli",
                               *args], cwd=self.path, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)


@pytest.fixture
def clone() -> Iterator[Clone]:
    home = Path(tempfile.mkdtemp(prefix="autoprov-home-"))
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    path = home / "checkout"
    subprocess.run(["git", "clone", "--no-hardlinks", "--quiet", str(ROOT), str(path)],
                   check=True)
    sip_port = free_port()
    ports = {"sip_listen": f"udp:127.0.0.1:{sip_port},tcp:127.0.0.1:{sip_port}",
             "http_port": free_port(), "https_port": free_port(), "admin_port": free_port(),
             "db_port": free_port(), "sip_children": 2, "sip_shm_mb": 64, "http_workers": 1}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOPROV_")}
    env.update({f"AUTOPROV_{k.upper()}": str(v) for k, v in ports.items()})
    env["PYTHONPATH"] = str(path)  # the clone's package, not the one installed from ROOT
    settings = Settings(
        var_dir=(path / "var").resolve(), sip_listen=tuple(str(ports["sip_listen"]).split(",")),
        http_port=int(ports["http_port"]), https_port=int(ports["https_port"]),
        admin_port=int(ports["admin_port"]), db_port=int(ports["db_port"]))
    cluster = db.private_cluster(settings)
    made = Clone(path, env, settings)
    try:
        yield made
    finally:
        made.cli("down")
        made.cli("purge")
        cluster.stop()
        shutil.rmtree(cluster.base, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def http_answers(settings: Settings) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", settings.http_port, timeout=2)
    try:
        conn.request("GET", "/device/autoprov/bootstrap/y000000000028.cfg")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def postgres_serving(data_dir: Path) -> bool:
    """Is any process a PostgreSQL server on this data directory (whatever pg_ctl says)?"""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"postgres") and str(data_dir).encode() in argv:
            return True
    return False


def test_a_clone_in_a_private_folder_goes_up_down_and_is_purged(clone: Clone) -> None:
    up = clone.cli("up", timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr

    # The clone's code ran: its kamailio.cfg and KEMI, its var/ for pid files and logs.
    kamailio_pid = (clone.path / "var" / "run" / "kamailio.up.pid").read_text().strip()
    kamailio_argv = Path(f"/proc/{kamailio_pid}/cmdline").read_bytes().split(b"\0")
    site_cfg = clone.path / "var" / "run" / "kamailio-site.cfg"  # the 0600 file with the DB URL
    assert str(site_cfg).encode() in kamailio_argv
    assert f'include_file "{clone.path / "kamailio.cfg"}"' in site_cfg.read_text()
    for name in ("kamailio", "provisioning"):
        assert (clone.path / "var" / "log" / f"{name}.log").stat().st_size > 0
    assert sip_answers(clone.settings)
    assert http_answers(clone.settings)

    url = clone.cli("db", "url")
    assert url.returncode == 0, url.stderr
    with psycopg.connect(url.stdout.strip(), connect_timeout=5) as conn:
        assert conn.execute("SELECT count(*) FROM autoprov.vendor").fetchone() == \
            (len(vendors.VENDORS),)

    cluster = db.private_cluster(clone.settings)
    pointer = clone.path / "var" / "pg"
    if os.geteuid() == 0:  # the postgres user cannot enter the clone: the cluster is outside it
        assert cluster.base.parent == pgcluster.SHARED_ROOT
        assert pointer.is_symlink() and pointer.resolve() == cluster.base
        assert (cluster.base / "data").owner() == "postgres"
    else:
        assert cluster.base == pointer
    assert (cluster.base / "postgres.log").exists()
    assert postgres_serving(cluster.data)

    down = clone.cli("down")
    assert down.returncode == 0, down.stderr
    assert not sip_answers(clone.settings)
    assert not http_answers(clone.settings)
    assert not postgres_serving(cluster.data)

    purge = clone.cli("purge")
    assert purge.returncode == 0, purge.stderr
    assert not cluster.base.exists()
    assert not (clone.path / "var").exists()
    assert (clone.path / "kamailio.cfg").exists()
