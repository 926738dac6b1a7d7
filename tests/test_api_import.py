"""POST /api/v1/devices/import: a spreadsheet of device lines, all rows or none."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from autoprov.config import Settings
from provisioning_wsgi.api.app import MAX_CSV_BYTES
from tests.admin_helpers import admin_settings
from tests.api_helpers import Api, start_api
from tests.conftest import start_provisioning
from tests.provisioning_helpers import new_mac

HEADER = "mac,vendor,model,line,username,domain,password,display_name\n"
CSV = {"Content-Type": "text/csv"}


@pytest.fixture(scope="module")
def api(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    own = admin_settings(tmp_path_factory.mktemp("api-import-var"), settings)
    running = start_provisioning(own)
    try:
        yield start_api(own, running)
    finally:
        running.stop()


def user() -> str:
    return "imp" + secrets.token_hex(5)


def count_devices(conn: psycopg.Connection[Any], macs: list[str]) -> int:
    row = conn.execute("SELECT count(*) FROM autoprov.device WHERE mac = ANY (%s)",
                       (macs,)).fetchone()
    return int(row[0]) if row else 0


def test_a_file_creates_devices_lines_and_the_missing_subscribers(
        api: Api, conn: psycopg.Connection[Any], new_subscriber: Any) -> None:
    existing = new_subscriber(domain="import.test")
    two_lines, one_line = new_mac("yealink"), new_mac("cisco")
    alice = user()
    text = HEADER + (
        f"{two_lines.upper()},yealink,T46U,1,{alice},import.test,s3cret,Alice\n"
        f"{two_lines},yealink,T46U,2,{existing.username},import.test,,Shared\n"
        "\n"
        f"{one_line[:4]}.{one_line[4:8]}.{one_line[8:]},cisco,SPA504G,1,{alice},import.test,"
        ",\"Alice, again\"\n")

    reply = api.call("POST", "/devices/import", data=text.encode(), headers=CSV)

    assert reply.status_code == 201, reply.text
    assert reply.json() == {"dry_run": False, "rows": 3, "valid": True,
                            "subscribers_created": 1, "devices_created": 2,
                            "lines_created": 3, "errors": []}
    shown = api.call("GET", f"/devices/{two_lines}").json()
    assert [(ln["line"], ln["aor"], ln["display_name"]) for ln in shown["lines"]] == [
        (1, f"{alice}@import.test", "Alice"), (2, existing.aor, "Shared")]
    assert shown["resync"]["reason"] == "config-change"
    assert api.call("GET", f"/devices/{one_line}").json()["lines"][0]["display_name"] == \
        "Alice, again"
    stored = conn.execute("SELECT password FROM subscriber WHERE username = %s",
                          (alice,)).fetchone()
    assert stored == ("s3cret",)


def mixed_file(conn: psycopg.Connection[Any], taken: str) -> tuple[str, list[str]]:
    good = [new_mac("cisco") for _ in range(2)]
    text = HEADER + "".join([
        f"{good[0]},cisco,SPA504G,1,{user()},import.test,pw,\n",          # row 2: fine
        f"00:15:zz,cisco,SPA504G,1,{user()},import.test,pw,\n",           # 3: mac
        f"{good[1]},acme,X1,1,{user()},import.test,pw,\n",                # 4: vendor
        f"{good[0]},cisco,SPA504G,1,{user()},import.test,pw,\n",          # 5: line twice
        f"{taken},cisco,SPA504G,2,{user()},import.test,pw,\n",            # 6: device exists
        f"{new_mac('cisco')},cisco,SPA504G,65,{user()},import.test,,\n",  # 7: line, password
        f"{new_mac('cisco')},cisco,SPA504G,1,a@b,import.test,pw,\n",      # 8: username
    ])
    return text, good


EXPECTED = {(3, "mac"), (4, "vendor"), (5, "line"), (6, "mac"), (7, "line"), (8, "username")}


def test_a_dry_run_reports_each_faulty_row_and_writes_nothing(
        api: Api, conn: psycopg.Connection[Any]) -> None:
    taken = api.call("POST", "/devices", json={"mac": new_mac("cisco"), "vendor": "cisco",
                                               "model": "SPA504G"}).json()["mac"]
    text, good = mixed_file(conn, taken)

    reply = api.call("POST", "/devices/import?dry_run=1", data=text.encode(), headers=CSV)

    assert reply.status_code == 200
    report = reply.json()
    assert report["dry_run"] is True and report["valid"] is False and report["rows"] == 7
    assert {(e["row"], e["field"]) for e in report["errors"]} == EXPECTED
    assert count_devices(conn, good) == 0

    clean = HEADER + f"{good[0]},cisco,SPA504G,1,{user()},import.test,pw,\n"
    dry = api.call("POST", "/devices/import?dry_run=true", data=clean, headers=CSV).json()
    assert dry["valid"] is True and dry["devices_created"] == 1 and dry["lines_created"] == 1
    assert count_devices(conn, good) == 0


def test_a_file_with_any_faulty_row_imports_nothing(
        api: Api, conn: psycopg.Connection[Any]) -> None:
    taken = api.call("POST", "/devices", json={"mac": new_mac("cisco"), "vendor": "cisco",
                                               "model": "SPA504G"}).json()["mac"]
    text, good = mixed_file(conn, taken)

    reply = api.call("POST", "/devices/import", data=text.encode(), headers=CSV)

    assert reply.status_code == 422
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert {(e["row"], e["field"]) for e in reply.json()["errors"]} == EXPECTED
    assert count_devices(conn, good) == 0


def test_rows_disagreeing_with_each_other_or_a_subscriber_are_faults(
        api: Api, new_subscriber: Any) -> None:
    known = new_subscriber(domain="import.test", password="old")
    mac, other, name = new_mac("cisco"), new_mac("cisco"), user()
    text = HEADER + "".join([
        f"{mac},cisco,SPA504G,1,{name},import.test,one,\n",
        f"{mac},cisco,SPA509G,2,{name},import.test,two,\n",
        f"{other},cisco,SPA504G,1,{known.username},import.test,new,\n",
    ])

    report = api.call("POST", "/devices/import?dry_run=1", data=text, headers=CSV).json()

    assert {(e["row"], e["field"]) for e in report["errors"]} == {
        (3, "model"), (3, "password"), (4, "password")}


def test_an_optional_serial_number_column_sets_the_devices_serial_numbers(
        api: Api, conn: psycopg.Connection[Any]) -> None:
    first, second, bad = new_mac("grandstream"), new_mac("grandstream"), new_mac("grandstream")
    name = user()
    header = HEADER.rstrip("\n") + ",serial_number\n"
    rows = [f"{first},grandstream,GRP2614,1,{name},import.test,pw1,,20ZE0001\n",
            f"{first},grandstream,GRP2614,2,{name},import.test,,,\n",
            f"{second},grandstream,GXP2170,1,{name},import.test,,,\n"]

    clash = api.call("POST", "/devices/import?dry_run=1", headers=CSV, data=header + "".join(
        [*rows, f"{first},grandstream,GRP2614,3,{name},import.test,,,20ZE0002\n",
         f"{bad},grandstream,GXP2170,1,{name},import.test,,,20ZE 0003\n"])).json()
    assert {(e["row"], e["field"]) for e in clash["errors"]} == {
        (5, "serial_number"), (6, "serial_number")}

    reply = api.call("POST", "/devices/import", data=header + "".join(rows), headers=CSV)

    assert reply.status_code == 201, reply.text
    stored = dict(conn.execute("SELECT mac, serial_number FROM autoprov.device"
                               " WHERE mac = ANY (%s)", ([first, second],)).fetchall())
    assert stored == {first: "20ZE0001", second: None}


def test_a_file_that_is_not_a_csv_of_the_columns_is_refused(api: Api) -> None:
    reply = api.call("POST", "/devices/import", data="mac,vendor\n", headers=CSV)
    assert reply.status_code == 422
    assert {e["field"] for e in reply.json()["errors"]} == {
        "model", "line", "username", "domain", "password", "display_name"}
    assert api.call("POST", "/devices/import", data=HEADER,
                    headers={"Content-Type": "application/json"}).status_code == 415
    assert api.call("POST", "/devices/import", data=b"\xff\xfe", headers=CSV
                    ).status_code == 400


def test_a_file_over_the_size_limit_is_a_problem_from_the_front(api: Api) -> None:
    """nginx refuses the body before the app reads it; the answer is still problem+json."""
    too_big = HEADER + "x" * (MAX_CSV_BYTES + 1)
    reply = api.call("POST", "/devices/import", data=too_big.encode(), headers=CSV)
    assert reply.status_code == 413
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert reply.json()["status"] == 413
    api.running.wait_for_log("denied client=127.0.0.1 port=admin reason=body-too-large")


def test_five_thousand_rows_go_in_at_once(api: Api, conn: psycopg.Connection[Any]) -> None:
    tag = secrets.token_hex(1)
    macs = [f"0002fd{tag}{n:04x}" for n in range(2500)]
    text = HEADER + "".join(
        f"{mac},cisco,SPA504G,{line},bulk{tag}{n}x{line},bulk.test,pw{n},Desk {n}\n"
        for n, mac in enumerate(macs) for line in (1, 2))

    started = time.monotonic()
    reply = api.call("POST", "/devices/import", data=text.encode(), headers=CSV)
    took = time.monotonic() - started

    assert reply.status_code == 201, reply.text[:500]
    assert reply.json()["lines_created"] == 5000
    assert count_devices(conn, macs) == 2500
    print(f"\n5,000-row import ({len(text) // 1024} KiB): {took:.2f} s, "
          f"{5000 / took:.0f} rows/s")
