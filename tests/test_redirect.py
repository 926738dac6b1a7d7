"""Zero-touch registration end to end: devices made with the CLI or plain SQL, the outbox in
PostgreSQL, workers, and a real HTTPS XML-RPC server playing Yealink RPS and Panasonic RCS."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from autoprov import db
from autoprov.config import Settings
from autoprov.pgcluster import Cluster
from autoprov.redirect import worker
from tests import fake_vendor
from tests.conftest import VENV_BIN, autoprov_cli, make_settings, own_database, start_provisioning
from tests.fake_vendor import FakeVendor

Conn = psycopg.Connection[Any]


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeVendor]:
    tls = fake_vendor.make_tls(tmp_path_factory.mktemp("vendor-tls"))
    with fake_vendor.running(tls, slow_seconds=1.0) as running:
        yield running


@pytest.fixture(scope="module")
def settings(pg_cluster: Cluster, fake: FakeVendor,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A database of our own: no other test's jobs, and no other test's workers."""
    with own_database(pg_cluster, "redirect_") as url:
        s = make_settings(
            tmp_path_factory.mktemp("redirect-var"), db_url=url,
            yealink_rps_url=fake.yealink_url, yealink_rps_user=fake.user,
            yealink_rps_password=fake.password, panasonic_rcs_url=fake.panasonic_url,
            panasonic_rcs_user=fake.user, panasonic_rcs_password=fake.password,
            redirect_ca_bundle=str(fake.tls.ca_file), redirect_timeout_ms=500,
            redirect_retry_initial_ms=100, redirect_retry_max_ms=400,
            # Long: a test passing quickly shows the NOTIFY woke the worker, not the poll.
            redirect_poll_ms=60000,
        )
        db.migrate(s)
        yield s


@pytest.fixture(autouse=True)
def clean_slate(fake: FakeVendor, conn: Conn) -> Iterator[None]:
    """Each test starts with no scripted failures and no other test's jobs waiting."""
    fake.clear_failures()
    conn.execute("UPDATE autoprov.redirect_job SET state = 'superseded' WHERE state = 'pending'")
    yield
    fake.clear_failures()


def yealink_mac() -> str:
    return "001565" + secrets.token_hex(3)


def panasonic_mac() -> str:
    return "0080f0" + secrets.token_hex(3)


def job(conn: Conn, mac: str, action: str = "register") -> dict[str, Any]:
    row = conn.execute(
        "SELECT state, attempts, outcome, reason, next_attempt_at > now() AS later"
        "  FROM autoprov.redirect_job WHERE mac = %s AND action = %s ORDER BY id DESC LIMIT 1",
        (mac, action),
    ).fetchone()
    assert row is not None, f"no {action} job for {mac}"
    return dict(zip(("state", "attempts", "outcome", "reason", "later"), row, strict=True))


def show(settings: Settings, mac: str) -> tuple[str, dict[str, Any]]:
    text = autoprov_cli(settings, "device", "show", mac, check=True).stdout
    data = json.loads(autoprov_cli(settings, "device", "show", mac, "--json", check=True).stdout)
    return text, data["redirect"]


def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.05)


@pytest.fixture
def background_worker(settings: Settings) -> Iterator[Callable[..., None]]:
    """Starts run_worker threads (as `autoprov serve` does); stops and joins them after."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(count: int = 1, **overrides: Any) -> None:
        for _ in range(count):
            thread = threading.Thread(target=worker.run_worker,
                                      args=(settings.replace(**overrides), stop), daemon=True)
            thread.start()
            threads.append(thread)

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive(), "run_worker did not stop when asked"


def test_cli_add_registers_a_yealink_with_the_bootstrap_url(
    settings: Settings, conn: Conn, fake: FakeVendor,
) -> None:
    mac = yealink_mac()
    autoprov_cli(settings, "device", "add", mac, "--vendor", "yealink", "--model", "T46U",
                 check=True)
    text, state = show(settings, mac)
    assert "redirect: yealink-rps pending" in text
    assert state["status"] == "pending"

    assert worker.run_once(settings) == 1

    bootstrap = f"http://localhost:{settings.http_port}/device/autoprov/bootstrap/"
    assert fake.yealink_servers[fake.yealink_devices[mac.upper()]] == bootstrap
    text, state = show(settings, mac)
    assert "redirect: yealink-rps registered" in text
    assert (state["service"], state["status"], state["outcome"]) == \
        ("yealink-rps", "registered", "registered")


def test_plain_sql_insert_registers_in_the_same_transaction(
    settings: Settings, conn: Conn, fake: FakeVendor,
) -> None:
    kept, dropped = panasonic_mac(), panasonic_mac()
    with conn.transaction():
        conn.execute("INSERT INTO autoprov.device (mac, vendor, model)"
                     " VALUES (%s, 'panasonic', 'KX-UT136')", (kept.upper(),))
    with pytest.raises(psycopg.errors.RaiseException), conn.transaction():
        conn.execute("INSERT INTO autoprov.device (mac, vendor, model)"
                     " VALUES (%s, 'panasonic', 'KX-UT136')", (dropped,))
        conn.execute("DO $$ BEGIN RAISE EXCEPTION 'changed my mind'; END $$")

    worker.run_once(settings)

    url = f"https://localhost:{settings.https_port}/device/autoprov/config/Config{{MAC}}.cfg"
    assert fake.panasonic_phones[kept.upper()] == url
    assert job(conn, kept)["state"] == "done"
    assert fake.calls_for(dropped) == []
    assert conn.execute("SELECT count(*) FROM autoprov.redirect_job WHERE mac = %s",
                        (dropped,)).fetchone() == (0,)
    view = conn.execute("SELECT vendor, service, status FROM autoprov.device_redirect"
                        " WHERE mac = %s", (kept,)).fetchone()
    assert view == ("panasonic", "panasonic-rcs", "registered")


def test_a_vendor_without_redirect_service_gets_no_job(settings: Settings, conn: Conn) -> None:
    mac = "0002fd" + secrets.token_hex(3)
    autoprov_cli(settings, "device", "add", mac, "--vendor", "cisco", "--model", "SPA504G",
                 check=True)

    text, state = show(settings, mac)

    assert state is None
    assert "redirect: none" in text
    assert conn.execute("SELECT count(*) FROM autoprov.redirect_job WHERE mac = %s",
                        (mac,)).fetchone() == (0,)
    retried = autoprov_cli(settings, "redirect", "retry", mac)
    assert retried.returncode == 2
    assert "no redirect service for its vendor" in retried.stderr


def test_devices_made_before_the_upgrade_are_queued_by_it(
    pg_cluster: Cluster, tmp_path: Path,
) -> None:
    with own_database(pg_cluster, "redirect_upgrade_") as url:
        s = make_settings(tmp_path, db_url=url)
        before = tmp_path / "sql"
        before.mkdir()
        shutil.copy(db.SQL_DIR / "001_devices.sql", before)
        db.migrate(s, before)
        mac = yealink_mac()
        with db.connect(s, autocommit=True) as conn:
            conn.execute("INSERT INTO autoprov.device (mac, vendor, model)"
                         " VALUES (%s, 'yealink', 'T46U'), ('0002fd000001', 'cisco', 'SPA')",
                         (mac,))

            db.migrate(s)

            rows = conn.execute("SELECT mac, status FROM autoprov.device_redirect").fetchall()
        assert rows == [(mac, "pending")]


def test_mac_change_deregisters_the_old_mac_and_registers_the_new(
    settings: Settings, conn: Conn, fake: FakeVendor,
) -> None:
    old, new = yealink_mac(), yealink_mac()
    autoprov_cli(settings, "device", "add", old, "--vendor", "yealink", "--model", "T46U",
                 check=True)
    worker.run_once(settings)
    assert old.upper() in fake.yealink_devices

    conn.execute("UPDATE autoprov.device SET mac = %s WHERE mac = %s", (new, old))
    worker.run_once(settings)

    assert old.upper() not in fake.yealink_devices
    assert new.upper() in fake.yealink_devices
    assert job(conn, old, "deregister")["state"] == "done"
    assert show(settings, new)[1]["status"] == "registered"


def test_delete_deregisters(settings: Settings, conn: Conn, fake: FakeVendor) -> None:
    mac = panasonic_mac()
    autoprov_cli(settings, "device", "add", mac, "--vendor", "panasonic", "--model",
                 "KX-UT136", check=True)
    worker.run_once(settings)
    assert mac.upper() in fake.panasonic_phones

    autoprov_cli(settings, "device", "remove", mac, check=True)
    worker.run_once(settings)

    assert mac.upper() not in fake.panasonic_phones
    assert job(conn, mac, "deregister")["state"] == "done"


def test_created_and_deleted_before_any_worker_ran_only_deregisters(
    settings: Settings, conn: Conn, fake: FakeVendor,
) -> None:
    mac = yealink_mac()
    autoprov_cli(settings, "device", "add", mac, "--vendor", "yealink", "--model", "T46U",
                 check=True)
    autoprov_cli(settings, "device", "remove", mac, check=True)

    worker.run_once(settings)

    assert fake.calls_for(mac, "redirect.registerDevice") == []
    assert mac.upper() not in fake.yealink_devices
    assert job(conn, mac, "register")["state"] == "superseded"
    assert job(conn, mac, "deregister")["state"] == "done"


def test_worker_wakes_on_a_new_device_at_once(
    settings: Settings, fake: FakeVendor, background_worker: Callable[..., None],
) -> None:
    background_worker()
    time.sleep(0.3)  # idle, waiting on LISTEN (the poll interval is a minute)
    mac = yealink_mac()

    autoprov_cli(settings, "device", "add", mac, "--vendor", "yealink", "--model", "T46U",
                 check=True)

    eventually(lambda: mac.upper() in fake.yealink_devices, 5, "the NOTIFY to wake the worker")


def test_vendor_outage_then_recovery_loses_and_duplicates_nothing(
    settings: Settings, conn: Conn, fake: FakeVendor, background_worker: Callable[..., None],
) -> None:
    fake.fail_next("panasonic", "http500", times=10_000)
    background_worker()
    macs = [panasonic_mac() for _ in range(3)]
    for mac in macs:
        started = time.monotonic()
        autoprov_cli(settings, "device", "add", mac, "--vendor", "panasonic", "--model",
                     "KX-UT136", check=True)
        assert time.monotonic() - started < 5  # creating a device never waits on the vendor

    eventually(lambda: all(job(conn, m)["attempts"] >= 3 for m in macs), 10, "retries")
    text, state = show(settings, macs[0])
    assert state["status"] == "pending"
    assert state["outcome"] == "temporary"
    assert "HTTP 500" in text
    fake.clear_failures()

    eventually(lambda: all(job(conn, m)["state"] == "done" for m in macs), 10, "recovery")
    for mac in macs:
        assert len(fake.calls_for(mac, "ipredirect.registerPhone", "ok")) == 1
        assert mac.upper() in fake.panasonic_phones
        assert show(settings, mac)[1]["status"] == "registered"


@pytest.mark.parametrize(("oui", "words"), [
    ("0015aa", "invalid MAC: Error:Invalid MAC(s)"),  # not a Yealink OUI
    ("001565", "owned by another account: Error:Q8ZK2M4X7P"),
], ids=["invalid-mac", "owned-by-other"])
def test_permanent_error_is_shown_not_retried_and_can_be_retried_by_hand(
    settings: Settings, conn: Conn, fake: FakeVendor, oui: str, words: str,
) -> None:
    mac = oui + secrets.token_hex(3)
    fake.foreign.add(mac.upper())
    autoprov_cli(settings, "device", "add", mac, "--vendor", "yealink", "--model", "T46U",
                 check=True)

    worker.run_once(settings)
    worker.run_once(settings)

    text, state = show(settings, mac)
    assert state["status"] == "failed"
    assert f"redirect: yealink-rps failed: {words}" in text
    assert job(conn, mac)["attempts"] == 1
    assert len(fake.calls_for(mac, "redirect.registerDevice")) == 1

    fake.foreign.discard(mac.upper())  # the operator sorted it out with the other account
    retried = autoprov_cli(settings, "redirect", "retry", mac.upper())
    assert retried.returncode == 0, retried.stderr
    worker.run_once(settings)
    if "invalid MAC" in words:
        assert show(settings, mac)[1]["status"] == "failed"  # still not a Yealink MAC
    else:
        assert show(settings, mac)[1]["status"] == "registered"
        again = autoprov_cli(settings, "redirect", "retry", mac)
        assert again.returncode == 2
        assert "nothing to retry" in again.stderr


def test_timeout_is_temporary_and_retried_after_back_off(
    settings: Settings, conn: Conn, fake: FakeVendor,
) -> None:
    mac = panasonic_mac()
    fake.fail_next("panasonic", "slow")
    autoprov_cli(settings, "device", "add", mac, "--vendor", "panasonic", "--model",
                 "KX-UT136", check=True)

    backing_off = settings.replace(redirect_retry_initial_ms=700)
    worker.run_once(backing_off)

    first = job(conn, mac)
    assert (first["state"], first["attempts"], first["outcome"]) == ("pending", 1, "temporary")
    assert first["reason"] == "no answer within 0.5s"
    assert first["later"]
    assert worker.run_once(backing_off) == 0  # not hammering the vendor
    time.sleep(0.75)
    assert worker.run_once(backing_off) == 1
    assert job(conn, mac)["state"] == "done"


def test_two_workers_racing_run_each_job_exactly_once(
    settings: Settings, conn: Conn, fake: FakeVendor,
) -> None:
    macs = [yealink_mac() for _ in range(15)] + [panasonic_mac() for _ in range(15)]
    with conn.transaction():
        for mac in macs:
            vendor = "yealink" if mac.startswith("001565") else "panasonic"
            conn.execute("INSERT INTO autoprov.device (mac, vendor, model) VALUES (%s, %s, 'm')",
                         (mac, vendor))
    fake.delay_seconds = 0.02
    start = threading.Barrier(2)
    done: list[int] = []

    def race() -> None:
        start.wait()
        done.append(worker.run_once(settings))

    racers = [threading.Thread(target=race) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=30)
    fake.delay_seconds = 0.0

    assert sum(done) == len(macs)
    assert min(done) > 0, f"both workers should have had work: {done}"
    for mac in macs:
        method = "redirect.registerDevice" if mac.startswith("001565") else \
            "ipredirect.registerPhone"
        assert len(fake.calls_for(mac, method)) == 1, mac
        assert job(conn, mac)["state"] == "done"


def test_a_job_survives_a_worker_killed_mid_call(
    settings: Settings, conn: Conn, fake: FakeVendor,
) -> None:
    mac = yealink_mac()
    conn.execute("INSERT INTO autoprov.device (mac, vendor, model) VALUES (%s, 'yealink', 'T4')",
                 (mac,))
    fake.fail_next("yealink", "slow")
    env = {**os.environ, **settings.replace(redirect_timeout_ms=30000).as_env(),
           "AUTOPROV_CONFIG": str(settings.var_dir / "none.toml")}
    seen = fake.received.get("yealink", 0)
    process = subprocess.Popen([str(VENV_BIN / "autoprov"), "redirect", "worker"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        eventually(lambda: fake.received.get("yealink", 0) > seen, 10, "the worker's call")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    assert job(conn, mac)["state"] == "pending"
    eventually(lambda: worker.run_once(settings) > 0, 5, "the lock of the dead worker to go")
    assert job(conn, mac)["state"] == "done"
    assert mac.upper() in fake.yealink_devices


def test_redirect_worker_command_stops_cleanly_on_sigterm(settings: Settings) -> None:
    env = {**os.environ, **settings.as_env(),
           "AUTOPROV_CONFIG": str(settings.var_dir / "none.toml")}
    process = subprocess.Popen([str(VENV_BIN / "autoprov"), "redirect", "worker"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    try:
        assert "redirect worker started" in process.stderr.readline()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        process.kill()
    assert "redirect worker stopped" in process.stderr.read()


def test_disabled_vendor_says_so_until_configured(
    settings: Settings, conn: Conn, fake: FakeVendor,
) -> None:
    mac = panasonic_mac()
    autoprov_cli(settings, "device", "add", mac, "--vendor", "panasonic", "--model",
                 "KX-UT136", check=True)

    worker.run_once(settings.replace(panasonic_rcs_url=""))

    text, state = show(settings, mac)
    assert state["status"] == "skipped"
    assert "Panasonic RCS integration is disabled (panasonic_rcs_url is empty)" in text
    assert fake.calls_for(mac) == []
    autoprov_cli(settings, "redirect", "retry", mac, check=True)
    worker.run_once(settings)
    assert show(settings, mac)[1]["status"] == "registered"


def test_a_bulk_insert_for_a_disabled_vendor_is_skipped_at_once_with_few_log_lines(
    settings: Settings, conn: Conn, fake: FakeVendor, caplog: pytest.LogCaptureFixture,
) -> None:
    """A DBA adding thousands of devices for a vendor whose redirect service is not configured
    gets every job settled (each MAC still shows why) and a handful of log lines, not one
    line and one transaction per device."""
    macs = [panasonic_mac() for _ in range(worker.SKIP_LINES + 15)]
    with conn.transaction():
        for mac in macs:
            conn.execute("INSERT INTO autoprov.device (mac, vendor, model)"
                         " VALUES (%s, 'panasonic', 'KX-UT136')", (mac,))

    with caplog.at_level(logging.INFO, logger="autoprov.redirect"):
        ran = worker.run_once(settings.replace(panasonic_rcs_url=""))

    assert ran == len(macs)
    states = dict(conn.execute(
        "SELECT mac, state FROM autoprov.redirect_job WHERE mac = ANY(%s)", (macs,)).fetchall())
    assert states == {mac: "skipped" for mac in macs}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == worker.SKIP_LINES + 1
    assert "redirect panasonic-rcs: 15 more jobs skipped: Panasonic RCS integration is disabled" \
        in lines[-1]
    assert fake.calls_for(macs[0]) == []
    assert show(settings, macs[-1])[1]["status"] == "skipped"


def test_worker_logs_vendor_mac_outcome_and_never_the_password(
    settings: Settings, conn: Conn, fake: FakeVendor, caplog: pytest.LogCaptureFixture,
) -> None:
    good, refused = yealink_mac(), panasonic_mac()
    for mac, vendor in ((good, "yealink"), (refused, "panasonic")):
        conn.execute("INSERT INTO autoprov.device (mac, vendor, model) VALUES (%s, %s, 'm')",
                     (mac, vendor))
    wrong = "Wr0ng-" + secrets.token_hex(6)

    with caplog.at_level(logging.INFO, logger="autoprov.redirect"):
        worker.run_once(settings.replace(panasonic_rcs_password=wrong))

    colon = ":".join(good[i:i + 2] for i in range(0, 12, 2))
    assert f"redirect yealink {colon} register: done: registered" in caplog.text
    assert "redirect panasonic" in caplog.text
    assert "authentication failed (HTTP 401" in caplog.text
    assert job(conn, refused)["outcome"] == "auth_failed"
    stored = conn.execute("SELECT string_agg(coalesce(reason, ''), ' ')"
                          "  FROM autoprov.redirect_job").fetchone()
    for secret in (wrong, fake.password):
        assert secret not in caplog.text
        assert stored is not None and secret not in stored[0]


def test_the_provisioning_service_registers_new_devices_by_itself(
    settings: Settings, conn: Conn, fake: FakeVendor,
) -> None:
    running = start_provisioning(settings)  # `autoprov serve`, as `make run` starts it
    try:
        mac = yealink_mac()
        autoprov_cli(settings, "device", "add", mac, "--vendor", "yealink", "--model", "T46U",
                     check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and show(settings, mac)[1]["status"] != "registered":
            time.sleep(0.1)
        assert show(settings, mac)[1]["status"] == "registered"
        assert mac.upper() in fake.yealink_devices
    finally:
        running.stop()
