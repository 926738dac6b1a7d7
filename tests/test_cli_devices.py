"""`autoprov device ...` and `autoprov db ...` as an operator types them; SQL as a DBA writes."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from autoprov.config import Settings
from tests.conftest import autoprov_cli, random_mac


def test_db_migrate_is_safe_to_repeat(settings: Settings, conn: psycopg.Connection[Any]) -> None:
    result = autoprov_cli(settings, "db", "migrate")
    assert result.returncode == 0, result.stderr
    assert "database is up to date" in result.stdout
    versions = dict(conn.execute("SELECT table_name, table_version FROM version").fetchall())
    assert versions["subscriber"] == 7 and versions["location"] == 9
    assert conn.execute("SELECT min(version) FROM autoprov.schema_version").fetchone() == (1,)


def test_db_url_prints_the_url_in_use(settings: Settings) -> None:
    assert autoprov_cli(settings, "db", "url").stdout.strip() == settings.db_url


def test_device_add_show_list_remove(settings: Settings, new_subscriber: Any) -> None:
    one, two = new_subscriber(), new_subscriber(domain="other.test")
    mac = random_mac()
    spelled = ":".join(mac[i:i + 2] for i in range(0, 12, 2)).upper()

    added = autoprov_cli(settings, "device", "add", spelled, "--vendor", "panasonic", "--model",
                         "KX-UT136", "--line", f"1={one.aor}", "--line", f"2={two.aor}")
    assert added.returncode == 0, added.stderr

    shown = json.loads(autoprov_cli(settings, "device", "show", mac, "--json", check=True).stdout)
    assert (shown["mac"], shown["vendor"], shown["model"]) == (mac, "panasonic", "KX-UT136")
    assert [(x["line"], x["aor"], x["registered"]) for x in shown["lines"]] == [
        (1, one.aor, False), (2, two.aor, False)]
    listed = json.loads(autoprov_cli(settings, "device", "list", "--json", check=True).stdout)
    assert {"mac": mac, "vendor": "panasonic", "model": "KX-UT136", "lines": 2} in listed

    assert autoprov_cli(settings, "device", "remove", mac).returncode == 0
    gone = autoprov_cli(settings, "device", "show", mac)
    assert gone.returncode != 0 and f"no device {mac}" in gone.stderr


@pytest.mark.parametrize("args, message", [
    (["device", "add", "00:15:65:zz:bb:cc", "--vendor", "yealink", "--model", "T46U"],
     "invalid MAC address"),
    (["device", "show", "0015.65aa"], "invalid MAC address"),
    (["device", "add", "001565000001", "--vendor", "yealink", "--model", "T46U",
      "--line", "1=ghost@example.test"], "no subscriber ghost@example.test"),
    (["device", "add", "001565000002", "--vendor", "yealink", "--model", "T46U",
      "--line", "one=alice"], "expected N=USER@DOMAIN"),
    (["device", "remove", "001565000003"], "no device 001565000003"),
])
def test_bad_input_is_refused_with_a_clear_message_and_changes_nothing(
    settings: Settings, conn: psycopg.Connection[Any], args: list[str], message: str
) -> None:
    before = conn.execute("SELECT count(*) FROM autoprov.device").fetchone()
    result = autoprov_cli(settings, *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert conn.execute("SELECT count(*) FROM autoprov.device").fetchone() == before


def test_adding_the_same_device_twice_is_refused(settings: Settings) -> None:
    mac = random_mac()
    autoprov_cli(settings, "device", "add", mac, "--vendor", "cisco", "--model", "SPA504G",
                 check=True)
    again = autoprov_cli(settings, "device", "add", mac, "--vendor", "cisco", "--model", "SPA504G")
    assert again.returncode != 0 and "already exists" in again.stderr


def test_a_dba_creates_a_device_with_plain_sql(settings: Settings, conn: psycopg.Connection[Any],
                                              new_subscriber: Any) -> None:
    sub = new_subscriber()
    mac = random_mac()
    dashed = "-".join(mac[i:i + 2] for i in range(0, 12, 2))
    # The statements the README gives a DBA.
    conn.execute("INSERT INTO autoprov.device (mac, vendor, model) VALUES (%s, 'yealink', 'T46U')",
                 (dashed,))
    conn.execute(
        "INSERT INTO autoprov.device_line (device_id, line_no, subscriber_id, display_name)"
        " SELECT d.id, 1, s.id, 'Front desk' FROM autoprov.device d, subscriber s"
        " WHERE d.mac = autoprov.normalize_mac(%s) AND s.username = %s AND s.domain = %s",
        (dashed, sub.username, sub.domain),
    )
    result = autoprov_cli(settings, "device", "show", dashed, "--json", check=True)
    shown = json.loads(result.stdout)
    assert shown["mac"] == mac
    assert shown["lines"][0]["aor"] == sub.aor
    assert shown["lines"][0]["display_name"] == "Front desk"


def test_sql_refuses_a_malformed_mac_and_an_unknown_vendor(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid MAC address"):
        conn.execute("INSERT INTO autoprov.device (mac, vendor, model)"
                     " VALUES ('00:15:65', 'yealink', 'T46U')")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("INSERT INTO autoprov.device (mac, vendor, model)"
                     " VALUES ('001565000099', 'nosuch', 'D785')")
