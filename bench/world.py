"""A throwaway world for one benchmark: its own PostgreSQL cluster and services on free ports.

Built from the test suite's helpers (tests/conftest.py), so a benchmark runs the same parts the
end-to-end tests do, and never touches what `make up` holds.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from autoprov import db, kamailio, stack
from autoprov.config import Settings
from autoprov.pgcluster import Cluster
from provisioning_wsgi import publish
from tests.conftest import (
    RunningService,
    make_settings,
    start_kamailio,
    start_provisioning,
    start_service,
    world_readable_tmpdir,
)
from tests.ports import free_port

BENCH_DIR = Path(__file__).resolve().parent
NATIVE_CFG = BENCH_DIR / "kamailio-native.cfg"
PUBLISH_TIMEOUT_S = 300


class World:
    def __init__(self, base: Path, cluster: Cluster) -> None:
        self.base = base
        self.cluster = cluster
        self.running: list[RunningService] = []
        # Seconds from each start of the provisioning service until its files were published.
        self.published_s: list[float] = []
        self._count = 0

    def settings(self, **overrides: Any) -> Settings:
        """Settings on fresh free ports, sharing this world's database."""
        self._count += 1
        # Every benchmark phone sends from 127.0.0.1: pike's per-address guard stays in the path
        # (its cost is measured) at its highest limit (16-bit counters), 32,767 requests a
        # second, above the rates a benchmark reaches.
        values: dict[str, Any] = {"db_url": self.cluster.url(), "sip_children": 4,
                                  "sip_shm_mb": 256, "sip_pike_per_2s": 65535}
        values.update(overrides)
        return make_settings(self.base / f"var{self._count}", **values)

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.cluster.url(), autocommit=True)

    def kamailio(self, settings: Settings, native: Path | None = None) -> RunningService:
        """The product's Kamailio (KEMI), or the same logic in a native kamailio.cfg."""
        if native is None:
            running = start_kamailio(settings)
        else:
            (svc,) = [s for s in stack.services(settings) if s.name == "kamailio"]
            # The same site file (database URL, 0600), starting the native script instead.
            svc.argv[svc.argv.index("-f") + 1] = str(
                kamailio.site_cfg(settings, native, "kamailio-native-site.cfg"))
            running = start_service(svc, settings.log_dir / "kamailio.log")
        self.running.append(running)
        return running

    def provisioning(self, settings: Settings) -> RunningService:
        """`autoprov serve` and its front, once the fleet's files are published (the front
        answers phones from them; until then every fetch reaches the app)."""
        started = time.monotonic()
        running = start_provisioning(settings)
        self.running.append(running)
        live = publish.root(settings) / publish.LIVE
        while not live.exists():
            if time.monotonic() - started > PUBLISH_TIMEOUT_S:
                raise RuntimeError(f"the fleet was not published in {PUBLISH_TIMEOUT_S} s")
            time.sleep(0.05)
        self.published_s.append(time.monotonic() - started)
        return running

    def stop(self, running: RunningService) -> None:
        running.stop()
        if running in self.running:
            self.running.remove(running)


PGSS = bool(os.environ.get("BENCH_PGSS"))


@contextmanager
def world(name: str) -> Iterator[World]:
    base = world_readable_tmpdir(f"autoprov-bench-{name}-")
    cluster = Cluster(base / "pg", free_port(), durable=False)
    w = World(base, cluster)
    try:
        cluster.init()
        if PGSS:  # profiling: where PostgreSQL's time goes, per statement
            with (cluster.data / "postgresql.auto.conf").open("a") as conf:
                conf.write("shared_preload_libraries = 'pg_stat_statements'\n"
                           "pg_stat_statements.track = all\n")
        cluster.start()
        db.migrate(w.settings())
        yield w
    finally:
        for running in reversed(w.running):
            running.stop()
        cluster.stop()
        if os.environ.get("BENCH_KEEP"):  # debugging: keep logs and sipp traces
            print(f"bench: kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def _fields(pid: str) -> list[str]:
    """The PID, then the fields of /proc/PID/stat after the command name."""
    return [pid, *Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()]


def _stats() -> list[list[str]]:
    """The fields of every live process."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            out.append(_fields(stat.parent.name))
        except OSError:
            continue
    return out


def _cpu(fields: list[str]) -> int:
    # [pid, state, ppid, pgrp, ...]: utime and stime are fields 14 and 15 of stat.
    return int(fields[12]) + int(fields[13])


def cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in a process group (Kamailio and its children)."""
    return sum(_cpu(f) for f in _stats() if int(f[3]) == pgid) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU one process has used so far (readable until it is reaped)."""
    return _cpu(_fields(str(pid))) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds(cluster: Cluster) -> float:
    """CPU of the cluster's postmaster and its children (backends, WAL writer, ...)."""
    try:
        postmaster = (cluster.data / "postmaster.pid").read_text().split()[0]
    except (OSError, IndexError):
        return 0.0
    total = sum(_cpu(f) for f in _stats() if postmaster in (f[0], f[2]))
    return total / os.sysconf("SC_CLK_TCK")


def service_cpu(running: RunningService, cluster: Cluster | None = None) -> dict[str, float]:
    """CPU seconds so far of a started service by part: its web front (a companion in its own
    process group), the service's own processes, and the database cluster when given."""
    parts: dict[str, float] = {}
    for service, name in ((c, "front (nginx)") for c in running.companions):
        if service.process is not None:
            parts[name] = parts.get(name, 0.0) + cpu_seconds(service.process.pid)
    if running.service.process is not None:
        parts["app"] = cpu_seconds(running.service.process.pid)
    if cluster is not None:
        parts["PostgreSQL"] = postgres_cpu_seconds(cluster)
    return parts
