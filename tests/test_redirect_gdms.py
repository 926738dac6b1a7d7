"""Grandstream's zero-touch through GDMS: the adapter against a real local HTTPS server speaking
GDMS's Open API (tests/fake_gdms.py), and end to end from a device made with the CLI or SQL."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from autoprov import db
from autoprov.config import Settings
from autoprov.pgcluster import Cluster
from autoprov.redirect import grandstream, registry, worker
from autoprov.redirect.base import Outcome
from tests import fake_gdms, fake_vendor
from tests.conftest import autoprov_cli, make_settings, own_database
from tests.fake_gdms import FakeGdms

Conn = psycopg.Connection[Any]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> fake_vendor.Tls:
    return fake_vendor.make_tls(tmp_path_factory.mktemp("gdms-tls"))


@pytest.fixture
def gdms(tls: fake_vendor.Tls) -> Iterator[FakeGdms]:
    with fake_gdms.running(tls, slow_seconds=1.0) as running:
        yield running


def gdms_settings(fake: FakeGdms, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "public_host": "prov.example.test", "http_port": 1445, "https_port": 1444,
        "gdms_url": fake.url, "gdms_username": fake.username, "gdms_password": fake.password,
        "gdms_client_id": fake.client_id, "gdms_client_secret": fake.client_secret,
        "gdms_site_id": fake.site_id, "redirect_ca_bundle": str(fake.tls.ca_file),
        "redirect_timeout_ms": 500,
    }
    values.update(overrides)
    return Settings(**values)


def adapter(settings: Settings) -> Any:
    return registry.SPECS["grandstream-gdms"].build(settings)


def gs_mac() -> str:
    return "c074ad" + secrets.token_hex(3)


def test_password_and_signature_are_computed_as_gdms_documents() -> None:
    # sha256 over the hex MD5 (Grandstream's GDMS API guide); vectors worked out by hand from it.
    assert grandstream.login_password("p@ssw0rd") == (
        "3b1aab613bb2badfe7d436ec60be2c6a75904ccfee613ab374bfedc938c62f5d")
    fields = {"access_token": "13dac871-38c2-4261-a698-6481840617cc", "client_id": "100555",
              "client_secret": "UYURsdf898fDF3e8f7dusf89dsgfgsdf", "timestamp": "1622241631000"}
    assert grandstream.signature(fields) == (
        "7c00edf2ba976dde5bc162ede6eafc72896231ef071742132fd91c3f09875080")
    body = b'[{"mac":"00:0B:82:AA:BB:CC","sn":"20ZE115N308CAABB","siteId":12345}]'
    assert grandstream.signature(fields, body) == (
        "b6c30f72269e33c9d4c823b065d2e78cf99d2744d43c879c7d40dd5c345a33b0")


def test_register_adds_the_device_and_points_it_at_the_plain_bootstrap(gdms: FakeGdms) -> None:
    service = adapter(gdms_settings(gdms))
    mac = gs_mac()
    serial = gdms.phone(mac)

    result = service.register(mac, serial)

    assert result.outcome is Outcome.REGISTERED, result.message
    assert gdms.devices[mac] == {"sn": serial, "siteId": gdms.site_id}
    # HTTP (P212 1): a factory phone does not trust our certificate yet; its bootstrap file
    # then sends it to the TLS port.
    assert gdms.config_server(mac) == ("1", "prov.example.test:1445/device/autoprov/bootstrap")
    assert service.check(mac).outcome is Outcome.REGISTERED
    # Again (a retried job): no second device, the config pushed again, one login in all.
    assert service.register(mac, serial).outcome is Outcome.REGISTERED
    assert [c.name for c in gdms.calls if c.mac == mac].count("device/add") == 1
    assert gdms.logins == 1


def test_deregister_points_the_phone_back_at_grandstream(gdms: FakeGdms) -> None:
    service = adapter(gdms_settings(gdms, gdms_config_server="https://prov.example.test:1444"
                                                             "/device/autoprov/config/"))
    mac = gs_mac()
    assert service.register(mac, gdms.phone(mac)).outcome is Outcome.REGISTERED
    assert gdms.config_server(mac) == ("2", "prov.example.test:1444/device/autoprov/config")

    result = service.deregister(mac)

    assert result.outcome is Outcome.NOT_FOUND, result.message
    assert gdms.config_server(mac) == ("2", "fm.grandstream.com/gs")
    never_added = gs_mac()
    assert service.deregister(never_added).outcome is Outcome.NOT_FOUND
    assert service.check(never_added).outcome is Outcome.NOT_FOUND


def test_no_serial_number_or_a_wrong_one_is_refused_with_the_reason(gdms: FakeGdms) -> None:
    service = adapter(gdms_settings(gdms))
    mac = gs_mac()
    gdms.phone(mac)

    missing = service.register(mac, "")
    wrong = service.register(mac, "20ZE0000000000")

    assert missing.outcome is Outcome.REJECTED and "serial number" in missing.message
    assert wrong.outcome is Outcome.REJECTED
    assert "serial number does not belong to this MAC" in wrong.message
    assert mac not in gdms.devices and mac not in gdms.configs


def test_a_device_of_another_account_is_refused(gdms: FakeGdms) -> None:
    service = adapter(gdms_settings(gdms))
    mac = gs_mac()
    serial = gdms.phone(mac)
    gdms.foreign.add(mac)

    result = service.register(mac, serial)

    assert result.outcome is Outcome.REJECTED
    assert fake_gdms.FOREIGN_ERROR in result.message
    assert mac not in gdms.configs


def test_wrong_credentials_fail_authentication_and_never_show_the_secrets(
    gdms: FakeGdms,
) -> None:
    mac = gs_mac()
    serial = gdms.phone(mac)
    wrong_password = adapter(gdms_settings(gdms, gdms_password="Wr0ng-" + gdms.password))
    wrong_secret = adapter(gdms_settings(gdms, gdms_client_secret="0" * 32))

    for service, secret in ((wrong_password, "Wr0ng-"), (wrong_secret, "0" * 32)):
        result = service.register(mac, serial)
        assert result.outcome is Outcome.AUTH_FAILED, result.message
        assert secret not in result.message
    assert gdms.devices == {}


def test_a_revoked_token_means_one_new_login_not_a_failure(gdms: FakeGdms) -> None:
    service = adapter(gdms_settings(gdms))
    first, second = gs_mac(), gs_mac()
    assert service.register(first, gdms.phone(first)).outcome is Outcome.REGISTERED

    gdms.fail_next("revoke")
    result = service.register(second, gdms.phone(second))

    assert result.outcome is Outcome.REGISTERED, result.message
    assert gdms.logins == 2


def test_outage_and_slowness_are_temporary(gdms: FakeGdms) -> None:
    service = adapter(gdms_settings(gdms))
    mac = gs_mac()
    serial = gdms.phone(mac)

    gdms.fail_next("http500")
    down = service.register(mac, serial)
    gdms.fail_next("malformed")
    garbled = service.register(mac, serial)
    gdms.fail_next("slow")
    slow = service.register(mac, serial)
    unreachable = adapter(gdms_settings(gdms, gdms_url="https://localhost:"
                                        f"{fake_vendor.closed_port()}")).check(mac)

    assert down.outcome is Outcome.TEMPORARY and "500" in down.message
    assert garbled.outcome is Outcome.TEMPORARY and "malformed answer" in garbled.message
    assert mac not in gdms.devices
    assert slow.outcome is Outcome.TEMPORARY and "no answer within" in slow.message
    assert unreachable.outcome is Outcome.TEMPORARY
    assert service.register(mac, serial).outcome is Outcome.REGISTERED


def test_a_site_is_required(gdms: FakeGdms) -> None:
    mac = gs_mac()
    result = adapter(gdms_settings(gdms, gdms_site_id=0)).register(mac, gdms.phone(mac))
    assert result.outcome is Outcome.REJECTED and "gdms_site_id" in result.message


# End to end: the outbox, the worker, the CLI and plain SQL.


@pytest.fixture
def settings(pg_cluster: Cluster, gdms: FakeGdms,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A database of our own: no other test's redirect jobs."""
    with own_database(pg_cluster, "gdms_") as url:
        s = make_settings(tmp_path_factory.mktemp("gdms-var"), db_url=url,
                          **{k: v for k, v in vars(gdms_settings(gdms)).items()
                             if k.startswith(("gdms_", "redirect_"))})
        db.migrate(s)
        yield s


def redirect(settings: Settings, mac: str) -> dict[str, Any]:
    shown = json.loads(autoprov_cli(settings, "device", "show", mac, "--json",
                                    check=True).stdout)
    return dict(shown["redirect"])


def test_cli_add_with_a_serial_number_registers_the_grandstream(
    settings: Settings, gdms: FakeGdms,
) -> None:
    mac = gs_mac()
    serial = gdms.phone(mac)
    autoprov_cli(settings, "device", "add", mac, "--vendor", "grandstream", "--model",
                 "GXP2170", "--serial", serial, check=True)

    assert worker.run_once(settings) == 1

    assert gdms.devices[mac]["sn"] == serial
    assert gdms.config_server(mac) is not None
    state = redirect(settings, mac)
    assert (state["service"], state["status"]) == ("grandstream-gdms", "registered")
    shown = autoprov_cli(settings, "device", "show", mac, check=True).stdout
    assert f"serial {serial}" in shown


def test_a_serial_number_set_later_in_sql_registers_the_device(
    settings: Settings, conn: Conn, gdms: FakeGdms,
) -> None:
    mac = gs_mac()
    serial = gdms.phone(mac)
    conn.execute("INSERT INTO autoprov.device (mac, vendor, model) VALUES (%s, 'grandstream',"
                 " 'GRP2614')", (mac,))
    worker.run_once(settings)
    state = redirect(settings, mac)
    assert state["status"] == "failed" and "no serial number" in state["reason"]

    conn.execute("UPDATE autoprov.device SET serial_number = %s WHERE mac = %s", (serial, mac))
    worker.run_once(settings)

    assert redirect(settings, mac)["status"] == "registered"
    assert gdms.devices[mac]["sn"] == serial


def test_a_malformed_serial_number_is_refused_before_anything_is_stored(
    settings: Settings, conn: Conn,
) -> None:
    mac = gs_mac()
    added = autoprov_cli(settings, "device", "add", mac, "--vendor", "grandstream", "--model",
                         "GXP2170", "--serial", "20ZE 1;DROP")
    assert added.returncode != 0
    assert "invalid serial number" in added.stderr
    assert conn.execute("SELECT count(*) FROM autoprov.device WHERE mac = %s",
                        (mac,)).fetchone() == (0,)
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO autoprov.device (mac, vendor, model, serial_number)"
                     " VALUES (%s, 'grandstream', 'GXP2170', 'has space')", (mac,))
