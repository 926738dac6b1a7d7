"""/healthz and /metrics on the operators' port, as a load balancer and Prometheus see them."""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from autoprov.config import Settings
from autoprov.pgcluster import Cluster
from provisioning_wsgi.admin.health import CACHE_S, DatabaseHealth
from tests.admin_helpers import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    admin_settings,
    admin_url,
    browser_session,
)
from tests.conftest import (
    RunningService,
    eventually,
    make_settings,
    start_provisioning,
    world_readable_tmpdir,
)
from tests.ports import free_port
from tests.prometheus_text import Scrape, parse
from tests.provisioning_helpers import (
    add_device,
    bootstrap_url,
    client,
    config_url,
    device_file,
    phone_cert,
)
from tests.test_resync import add_device as add_device_with_cli
from tests.test_resync import wait_pending_in_proxy

TOKEN = "prometheus-scrape-token-0123456789"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@pytest.fixture(scope="module")
def monitored(settings: Settings, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[Settings, RunningService]]:
    """Two worker processes, the pages' login and a metrics token, the session's database and
    (when a test starts it) the session's Kamailio."""
    own = admin_settings(tmp_path_factory.mktemp("metrics-var"), settings, http_workers=2,
                         admin_metrics_token=TOKEN)
    # rpc_socket lives in var/run: this service's is the session Kamailio's.
    own.rpc_socket.symlink_to(settings.rpc_socket)
    running = start_provisioning(own)
    yield own, running
    running.stop()


def scrape(own: Settings, auth: Any = (ADMIN_USER, ADMIN_PASSWORD)) -> Scrape:
    reply = browser_session(own, auth=auth).get(admin_url(own, "/metrics"), timeout=10)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == CONTENT_TYPE
    return parse(reply.text)


class Bearer(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def test_healthz_answers_anyone_even_with_the_pages_off(provisioning: RunningService,
                                                         settings: Settings) -> None:
    assert settings.admin_password == "" and settings.admin_metrics_token == ""
    session = browser_session(settings, auth=None)

    reply = session.get(admin_url(settings, "/healthz"))

    assert (reply.status_code, reply.text) == (200, "ok\n")
    assert "WWW-Authenticate" not in reply.headers
    assert session.head(admin_url(settings, "/healthz")).status_code == 200
    assert session.post(admin_url(settings, "/healthz")).status_code == 405
    # Neither login is set: the pages and /metrics are not there.
    for path in ("/admin/", "/metrics"):
        assert session.get(admin_url(settings, path)).status_code == 404
        assert browser_session(settings).get(admin_url(settings, path)).status_code == 404
    # A load balancer's polls are not logged; what was not a 200 is.
    log = provisioning.wait_for_log("path=/metrics status=404")
    assert "path=/healthz status=405" in log
    assert "path=/healthz status=200" not in log


def test_metrics_need_the_pages_login_or_the_token(
    monitored: tuple[Settings, RunningService],
) -> None:
    own, running = monitored
    url = admin_url(own, "/metrics")

    anonymous = browser_session(own, auth=None).get(url)
    assert anonymous.status_code == 401
    assert "autoprov_" not in anonymous.text
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert "Bearer realm=" in anonymous.headers["WWW-Authenticate"]
    assert scrape(own).kinds["autoprov_http_requests_total"] == "counter"
    assert scrape(own, auth=Bearer(TOKEN)).kinds["kamailio_up"] == "gauge"

    for wrong in (Bearer("guess-" + TOKEN), Bearer(""), (ADMIN_USER, "guess")):
        assert browser_session(own, auth=wrong).get(url).status_code == 401

    def denied() -> list[str]:
        return [line for line in running.log().splitlines()
                if "path=/metrics" in line and " denied " in line]

    assert eventually(lambda: len(denied()) == 3, timeout=5)
    log = running.log()
    assert all(re.search(r" WARNING denied client=127\.0\.0\.1 port=admin "
                         r"reason=wrong-credentials path=/metrics$", line) for line in denied())
    assert TOKEN not in log and "guess" not in log


def test_the_exposition_has_every_family_with_help_and_type(
    monitored: tuple[Settings, RunningService],
) -> None:
    own, _ = monitored

    got = scrape(own)  # parse() is strict: HELP, TYPE, families, histograms

    assert got.kinds["autoprov_http_request_duration_seconds"] == "histogram"
    for gauge in ("autoprov_database_up", "autoprov_registered_contacts",
                  "autoprov_resync_requests", "autoprov_resync_notifies",
                  "autoprov_redirect_jobs", "kamailio_up"):
        assert got.kinds[gauge] == "gauge"
    assert got.value("autoprov_database_up") == 1
    for port in ("bootstrap", "tls", "admin"):
        assert ("autoprov_http_request_duration_seconds_bucket",
                frozenset({("port", port), ("le", "+Inf")})) in got.series
    for state in ("pending", "sending", "done", "failed", "fetched"):
        assert got.value("autoprov_resync_requests", state=state) >= 0
    for service in ("yealink-rps", "panasonic-rcs"):
        assert got.value("autoprov_redirect_jobs", service=service, state="pending") >= 0
    assert all(re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name) for name in got.names())


def _served_by(running: RunningService, mac: str) -> dict[str, set[str]]:
    """The worker pids whose access lines name the device, per port."""
    found: dict[str, set[str]] = {"bootstrap": set(), "tls": set()}
    for line in running.log().splitlines():
        if f"device={mac}" in line:
            pid = line.split("autoprov-provisioning[", 1)[1].split("]", 1)[0]
            found[line.split(" port=", 1)[1].split(" ", 1)[0]].add(pid)
    return found


def test_fetches_on_both_phone_ports_count_exactly_whichever_worker_answered(
    monitored: tuple[Settings, RunningService], conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    own, running = monitored
    mac = add_device(conn, "yealink", [new_subscriber()])
    cert = phone_cert(own, tmp_path, "yealink", mac)
    file = device_file("yealink", mac)
    before = scrape(own)
    fetched = 0
    # Ten at once: the front opens several connections to the service, and the kernel hands
    # them to either worker. Until both have answered on both ports (a few rounds at most).
    def fetch(_: int) -> tuple[int, int]:
        return (client(own).get(bootstrap_url(own, file)).status_code,
                client(own, cert).get(config_url(own, file)).status_code)

    for _round in range(20):
        with ThreadPoolExecutor(10) as pool:
            assert set(pool.map(fetch, range(10))) == {(200, 200)}
        fetched += 10
        if eventually(lambda: all(len(pids) == 2 for pids in _served_by(running, mac).values()),
                       timeout=0.5):
            break
    assert all(len(pids) == 2 for pids in _served_by(running, mac).values())

    after = scrape(own)

    for port in ("bootstrap", "tls"):
        def grew(name: str, port: str = port, **labels: str) -> float:
            return after.value(name, port=port, **labels) - \
                before.value(name, port=port, **labels)

        assert grew("autoprov_http_requests_total", status="200") == fetched
        assert grew("autoprov_http_requests_total", status="404") == 0
        assert grew("autoprov_http_request_duration_seconds_count") == fetched
        assert grew("autoprov_http_request_duration_seconds_bucket", le="+Inf") == fetched
        assert 0 < grew("autoprov_http_request_duration_seconds_sum") < fetched * 10
    # The scrape itself is an answer on the admin port.
    assert after.value("autoprov_http_requests_total", port="admin", status="200") > \
        before.value("autoprov_http_requests_total", port="admin", status="200")


def test_a_refused_fetch_counts_under_its_status(
    monitored: tuple[Settings, RunningService], conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    own, _ = monitored
    mac = add_device(conn, "yealink", [new_subscriber()])
    other = add_device(conn, "yealink", [new_subscriber()])
    cert = phone_cert(own, tmp_path, "yealink", mac)
    before = scrape(own)

    assert client(own, cert).get(config_url(own, device_file("yealink", other))).status_code \
        == 403
    assert client(own).get(bootstrap_url(own, "no-such-file.txt")).status_code == 404

    after = scrape(own)
    assert after.value("autoprov_http_requests_total", port="tls", status="403") == \
        before.value("autoprov_http_requests_total", port="tls", status="403") + 1
    assert after.value("autoprov_http_requests_total", port="bootstrap", status="404") == \
        before.value("autoprov_http_requests_total", port="bootstrap", status="404") + 1


def test_counters_survive_a_worker_being_killed_and_started_again(
    monitored: tuple[Settings, RunningService], conn: psycopg.Connection[Any],
    new_subscriber: Any,
) -> None:
    own, running = monitored
    mac = add_device(conn, "yealink", [new_subscriber()])
    url = bootstrap_url(own, device_file("yealink", mac))
    for _ in range(10):
        assert client(own).get(url).status_code == 200
    before = scrape(own).value("autoprov_http_requests_total", port="bootstrap", status="200")
    victim = int(max(eventually(lambda: _served_by(running, mac)["bootstrap"], timeout=5)))

    os.kill(victim, signal.SIGKILL)  # no chance to write anything on its way out
    running.wait_for_log(f"(pid {victim}) exited (signal SIGKILL); starting it again")
    # It may be worker 0, which serves /metrics: wait for its successor.
    kept = eventually(lambda: _try_scrape(own), timeout=15)

    assert kept is not None
    assert kept.value("autoprov_http_requests_total", port="bootstrap", status="200") == before
    for _ in range(10):
        assert client(own).get(url).status_code == 200
    assert scrape(own).value("autoprov_http_requests_total", port="bootstrap",
                             status="200") == before + 10


def _try_scrape(own: Settings) -> Scrape | None:
    try:
        return scrape(own)
    except (requests.ConnectionError, AssertionError):
        return None


def test_registered_contacts_go_up_when_a_phone_registers(
    monitored: tuple[Settings, RunningService], kamailio: RunningService, new_subscriber: Any,
    phone_for: Any,
) -> None:
    own, _ = monitored
    before = scrape(own).value("autoprov_registered_contacts")

    assert phone_for(new_subscriber()).register(expires=600).ok

    assert scrape(own).value("autoprov_registered_contacts") == before + 1


def test_kamailio_statistics_are_there_while_it_runs(
    monitored: tuple[Settings, RunningService], kamailio: RunningService,
) -> None:
    own, _ = monitored

    got = scrape(own, auth=Bearer(TOKEN))

    assert got.value("kamailio_up") == 1
    assert got.kinds["kamailio_core_rcv_requests"] == "untyped"
    assert got.value("kamailio_core_rcv_requests") > 0  # the readiness probe's OPTIONS at least
    for group in ("core", "tmx", "sl", "usrloc", "registrar", "shmem"):
        assert any(name.startswith(f"kamailio_{group}_") for name in got.names()), group


def test_a_resync_outcome_shows_by_result(
    monitored: tuple[Settings, RunningService], kamailio: RunningService, settings: Settings,
    new_subscriber: Any, phone_for: Any,
) -> None:
    own, _ = monitored
    sub = new_subscriber()
    add_device_with_cli(settings, sub)  # a new device: resynced at its first REGISTER
    phone = phone_for(sub)
    wait_pending_in_proxy(settings, sub.aor)
    before = scrape(own).value("autoprov_resync_notifies", result="accepted")

    with phone.answer("notify-accept") as uas:
        assert phone.register().ok
        assert uas.result().ok

    # Outcomes are recorded in batches by the proxy's timer process.
    assert eventually(lambda: scrape(own).value("autoprov_resync_notifies", result="accepted")
                       == before + 1)


def test_healthz_is_503_and_metrics_say_so_while_the_database_is_unreachable(
    tmp_path: Path,
) -> None:
    dead = f"postgresql://autoprov@127.0.0.1:{free_port()}/autoprov"
    own = make_settings(tmp_path / "var", db_url=dead, admin_metrics_token=TOKEN)
    running = start_provisioning(own)
    try:
        health = browser_session(own, auth=None).get(admin_url(own, "/healthz"), timeout=15)
        assert (health.status_code, health.text) == (503, "database unreachable\n")

        got = scrape(own, auth=Bearer(TOKEN))

        assert got.value("autoprov_database_up") == 0
        assert got.value("kamailio_up") == 0  # nothing at this service's rpc_socket
        assert not {"autoprov_registered_contacts", "autoprov_resync_requests",
                    "autoprov_resync_notifies", "autoprov_redirect_jobs"} & got.names()
        assert got.value("autoprov_http_requests_total", port="admin", status="503") == 1
        # The token alone opens /metrics; the pages stay off without admin_password.
        assert browser_session(own).get(admin_url(own, "/admin/")).status_code == 404
        log = running.wait_for_log("path=/healthz status=503 reason=database-unreachable")
        assert " INFO access client=127.0.0.1 port=admin method=GET path=/healthz status=503" \
            in log
    finally:
        running.stop()


def test_the_database_is_asked_at_most_once_a_second() -> None:
    base = world_readable_tmpdir("autoprov-healthz-")
    cluster = Cluster(base / "pg", free_port(), durable=False)
    cluster.init()
    cluster.start()
    try:
        now = [0.0]
        health = DatabaseHealth(make_settings(base / "var", db_url=cluster.url()),
                                clock=lambda: now[0])
        assert health.up()
        cluster.stop()

        now[0] += CACHE_S * 0.9
        assert health.up()  # a flood of probes within the second gets the last answer
        now[0] += CACHE_S * 0.1
        assert not health.up()
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
