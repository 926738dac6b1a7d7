"""autoprov's resync embedded in an operator's own proxy: a minimal KEMI script and a native
kamailio.cfg (python_exec), each with its own REGISTER handling, keep REGISTER and check-sync
working (docs/embedding.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from autoprov import kamailio, stack
from autoprov.config import ROOT, Settings
from tests import sipdigest
from tests.conftest import (
    RunningService,
    autoprov_cli,
    eventually,
    make_settings,
    random_mac,
    start_service,
)
from tests.sipp import Phone
from tests.test_resync import wait_pending_in_proxy

HERE = Path(__file__).parent / "embedding"
OPERATORS = {
    "kemi": (HERE / "operator-kemi.cfg", HERE / "operator_kemi.py"),
    "native": (HERE / "operator-native.cfg", ROOT / "kemi" / "embedded.py"),
}

SERVER_ID = 25  # a node id of its own (tests/conftest.py own_proxy)


@pytest.fixture(params=sorted(OPERATORS))
def operator_proxy(request: pytest.FixtureRequest, settings: Settings,
                   tmp_path: Path) -> Iterator[Settings]:
    cfg, script = OPERATORS[request.param]
    own = make_settings(tmp_path / "var", db_url=settings.db_url, sip_server_id=SERVER_ID)
    (svc,) = [s for s in stack.services(own) if s.name == "kamailio"]
    svc.argv[svc.argv.index("-f") + 1] = str(kamailio.site_cfg(own, cfg, "operator-site.cfg"))
    defines = [i for i, arg in enumerate(svc.argv) if arg.startswith("KEMI_SCRIPT=")]
    for i in defines:
        svc.argv[i] = f'KEMI_SCRIPT="{script}"'
    running: RunningService = start_service(svc, own.log_dir / "kamailio.log")
    yield own
    stack.stop(running.service)


def test_operator_proxy_registers_and_resyncs(
    operator_proxy: Settings, conn: psycopg.Connection[Any], new_subscriber: Any,
) -> None:
    own = operator_proxy
    _, host, port = own.sip_listen[0].split(":")
    sub = new_subscriber()
    mac = random_mac()
    autoprov_cli(own, "device", "add", mac, "--vendor", "yealink", "--model", "T46U",
                 "--line", f"1={sub.aor}", check=True)
    phone = Phone(sub.username, sub.domain, sub.password, (host, int(port)))

    # The first REGISTER sends the device's check-sync; the phone challenges it.
    wait_pending_in_proxy(own, sub.aor)
    with phone.answer("notify-challenge-401") as uas:
        assert phone.register().ok
        phone_side = uas.result()
    assert "AUTH-VERIFIED" in phone_side.output, phone_side.output
    first, answer = phone_side.received("NOTIFY")
    assert sipdigest.header(answer, "Call-ID") == sipdigest.header(first, "Call-ID")

    def outcome() -> list[tuple[Any, ...]]:
        return conn.execute("SELECT outcome FROM autoprov.resync_status WHERE mac = %s",
                            (mac,)).fetchall()

    assert eventually(lambda: outcome() == [("accepted",)], timeout=10), outcome()

    # A change made in SQL reaches the phone through the operator's proxy as well.
    with phone.answer("notify-challenge-401") as uas:
        conn.execute("UPDATE autoprov.device SET model = 'T54W' WHERE mac = %s", (mac,))
        assert "AUTH-VERIFIED" in uas.result().output
