"""Operating the proxy: reloading KEMI code live, KSR stubs matching the installed Kamailio, and
its database password out of sight."""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path
from urllib.parse import urlsplit

from autoprov import sipprobe, stack
from autoprov.config import ROOT, Settings
from tests.conftest import (
    RunningService,
    autoprov_cli,
    make_settings,
    own_proxy,
    start_kamailio,
)
from tests.ports import free_port

STUBS_SERVER_ID = 28  # a node id of its own (tests/conftest.py own_proxy)


def test_changed_kemi_code_is_reloaded_without_restarting_kamailio(
    settings: Settings, tmp_path: Path
) -> None:
    code = tmp_path / "code"
    shutil.copytree(ROOT / "kemi", code / "kemi", ignore=shutil.ignore_patterns("__pycache__"))
    own = make_settings(tmp_path / "var", db_url=settings.db_url)
    running = start_kamailio(own, code_root=code)
    try:
        _, host, port = sipprobe.parse_listen(own.sip_listen[0])
        assert sipprobe.options("udp", host, port) == (200, "Keepalive")
        pid = running.service.process.pid if running.service.process else None

        router = code / "kemi" / "router.py"
        router.write_text(router.read_text().replace('"Keepalive"', '"Reloaded"'))
        result = autoprov_cli(own, "kamailio", "reload")

        assert result.returncode == 0, result.stderr
        # Each worker reloads on its next message (skipping the turn if another process holds
        # Kamailio's reload lock at that instant): soon every answer comes from the new code.
        deadline = time.monotonic() + 10
        streak = 0
        while streak < 10 and time.monotonic() < deadline:
            reason = sipprobe.options("udp", host, port)[1]
            assert reason in ("Keepalive", "Reloaded")
            streak = streak + 1 if reason == "Reloaded" else 0
            time.sleep(0.05)
        assert streak == 10
        assert running.service.process is not None
        assert running.service.process.poll() is None and running.service.process.pid == pid
    finally:
        stack.stop(running.service)


def test_committed_ksr_stubs_match_the_installed_kamailio(
    settings: Settings, tmp_path: Path
) -> None:
    # A proxy with every module autoprov may load (the tls module for a tls: socket, rtpengine
    # for rtpengine_socket): the stubs cover what KEMI code may call in any configuration.
    with own_proxy(settings, tmp_path, STUBS_SERVER_ID, f"udp:127.0.0.1:{free_port()}",
                   f"tls:127.0.0.1:{free_port()}",
                   rtpengine_socket=f"udp:127.0.0.1:{free_port()}", rtpengine_run=False) as own:
        result = autoprov_cli(own, "kamailio", "stubs", "--out", str(tmp_path / "out"))
    tmp_path = tmp_path / "out"
    assert result.returncode == 0, result.stderr
    generated = {p.name: p.read_text() for p in (tmp_path / "KSR").glob("*.pyi")}
    committed = {p.name: p.read_text() for p in (ROOT / "typings" / "KSR").glob("*.pyi")}
    assert "pv.pyi" in generated
    assert generated == committed, "run `make stubs` and commit typings/"


def test_reload_without_a_running_proxy_says_so(tmp_path: Path) -> None:
    own = make_settings(tmp_path / "var")
    result = autoprov_cli(own, "kamailio", "reload")
    assert result.returncode != 0
    assert "Kamailio is not running" in result.stderr


def _pgid(pid: str) -> int | None:
    try:
        return os.getpgid(int(pid))
    except ProcessLookupError:
        return None


def test_database_password_is_not_on_kamailios_command_line(
    kamailio: RunningService, settings: Settings
) -> None:
    password = urlsplit(settings.db_url).password
    assert password and kamailio.service.process
    # Every process of the service: its supervisor, Kamailio's main process and its workers.
    group = kamailio.service.process.pid
    pids = [p.name for p in Path("/proc").iterdir() if p.name.isdigit()
            and _pgid(p.name) == group]
    assert len(pids) > 3

    for pid in pids:
        assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    site = settings.run_dir / "kamailio-site.cfg"
    assert stat.S_IMODE(site.stat().st_mode) == 0o600
