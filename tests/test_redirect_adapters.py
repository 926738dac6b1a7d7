"""Each vendor adapter against a real HTTPS XML-RPC server speaking that vendor's protocol."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoprov.config import Settings
from autoprov.redirect import registry
from autoprov.redirect.base import Outcome, RedirectService
from autoprov.redirect.yealink import server_name
from tests import fake_vendor
from tests.fake_vendor import FakeVendor, Tls


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return fake_vendor.make_tls(tmp_path_factory.mktemp("vendor-tls"))


@pytest.fixture
def fake(tls: Tls) -> Iterator[FakeVendor]:
    with fake_vendor.running(tls, slow_seconds=1.5) as running:
        yield running


def vendor_settings(fake: FakeVendor, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "public_host": "prov.example.test", "http_port": 1445, "https_port": 1444,
        "yealink_rps_url": fake.yealink_url, "yealink_rps_user": fake.user,
        "yealink_rps_password": fake.password,
        "panasonic_rcs_url": fake.panasonic_url, "panasonic_rcs_user": fake.user,
        "panasonic_rcs_password": fake.password,
        "snom_sraps_url": fake.snom_url, "snom_sraps_user": fake.user,
        "snom_sraps_password": fake.password,
        "redirect_ca_bundle": str(fake.tls.ca_file), "redirect_timeout_ms": 500,
    }
    values.update(overrides)
    return Settings(**values)


def adapter(service: str, settings: Settings) -> RedirectService:
    return registry.SPECS[service].build(settings)


def yealink_mac() -> str:
    return "001565" + secrets.token_hex(3)


def panasonic_mac() -> str:
    return "0080f0" + secrets.token_hex(3)


def snom_mac() -> str:
    return "000413" + secrets.token_hex(3)


VENDORS = [("yealink-rps", "yealink", yealink_mac), ("panasonic-rcs", "panasonic", panasonic_mac),
           ("snom-sraps", "snom", snom_mac)]


def test_snom_registers_the_plain_bootstrap_url_with_the_mac_placeholder(
    fake: FakeVendor,
) -> None:
    sraps = adapter("snom-sraps", vendor_settings(fake))
    mac = snom_mac()

    assert sraps.register(mac).outcome is Outcome.REGISTERED

    url = "http://prov.example.test:1445/device/autoprov/bootstrap/snom-{mac}.htm"
    assert fake.snom_phones == {mac.upper(): url}
    checked = sraps.check(mac)
    assert (checked.outcome, checked.message) == (Outcome.REGISTERED, url)


def test_yealink_binds_macs_to_one_server_entry_for_our_bootstrap_url(fake: FakeVendor) -> None:
    rps = adapter("yealink-rps", vendor_settings(fake))
    first, second = yealink_mac(), yealink_mac()

    assert rps.register(first).outcome is Outcome.REGISTERED
    assert rps.register(second).outcome is Outcome.REGISTERED

    bootstrap = "http://prov.example.test:1445/device/autoprov/bootstrap/"
    assert fake.yealink_servers == {server_name(bootstrap): bootstrap}
    assert fake.yealink_devices[first.upper()] == server_name(bootstrap)
    assert fake.yealink_devices[second.upper()] == server_name(bootstrap)
    assert [c.method for c in fake.calls].count("redirect.addServer") == 1
    assert rps.check(first).outcome is Outcome.REGISTERED


def test_yealink_reuses_a_server_entry_made_earlier(fake: FakeVendor) -> None:
    settings = vendor_settings(fake)
    adapter("yealink-rps", settings).register(yealink_mac())
    mac = yealink_mac()

    result = adapter("yealink-rps", settings).register(mac)  # a new worker: addServer again

    assert result.outcome is Outcome.REGISTERED
    assert len(fake.yealink_servers) == 1
    assert mac.upper() in fake.yealink_devices


def test_yealink_server_entry_deleted_at_the_vendor_is_made_again(fake: FakeVendor) -> None:
    rps = adapter("yealink-rps", vendor_settings(fake))
    rps.register(yealink_mac())
    fake.yealink_servers.clear()
    mac = yealink_mac()

    first = rps.register(mac)
    second = rps.register(mac)

    assert first.outcome is Outcome.TEMPORARY
    assert "Invalid server" in first.message
    assert second.outcome is Outcome.REGISTERED
    assert mac.upper() in fake.yealink_devices


def test_panasonic_registers_the_tls_config_url_with_the_mac_placeholder(
    fake: FakeVendor,
) -> None:
    rcs = adapter("panasonic-rcs", vendor_settings(fake))
    mac = panasonic_mac()

    result = rcs.register(mac)

    url = "https://prov.example.test:1444/device/autoprov/config/Config{MAC}.cfg"
    assert result.outcome is Outcome.REGISTERED
    assert fake.panasonic_phones == {mac.upper(): url}
    checked = rcs.check(mac)
    assert (checked.outcome, checked.message) == (Outcome.REGISTERED, url)


def test_configured_urls_win_over_the_derived_ones(fake: FakeVendor) -> None:
    settings = vendor_settings(
        fake, yealink_rps_server_url="http://boot.example.test/y/",
        panasonic_rcs_phone_url="https://cfg.example.test/p/{MAC}")
    ymac, pmac = yealink_mac(), panasonic_mac()

    adapter("yealink-rps", settings).register(ymac)
    adapter("panasonic-rcs", settings).register(pmac)

    assert fake.yealink_servers[fake.yealink_devices[ymac.upper()]] == \
        "http://boot.example.test/y/"
    assert fake.panasonic_phones[pmac.upper()] == "https://cfg.example.test/p/{MAC}"


@pytest.mark.parametrize(("service", "vendor", "new_mac"), VENDORS)
def test_deregister_removes_the_mac_and_is_repeatable(
    fake: FakeVendor, service: str, vendor: str, new_mac: Any,
) -> None:
    redirect = adapter(service, vendor_settings(fake))
    mac = new_mac()
    redirect.register(mac)

    first = redirect.deregister(mac)
    again = redirect.deregister(mac)

    assert first.outcome is Outcome.NOT_FOUND
    assert again.outcome is Outcome.NOT_FOUND  # nothing to remove is success too
    assert mac.upper() not in fake.yealink_devices
    assert mac.upper() not in fake.panasonic_phones
    assert mac.upper() not in fake.snom_phones
    assert redirect.check(mac).outcome is Outcome.NOT_FOUND


@pytest.mark.parametrize(("service", "vendor", "new_mac"), VENDORS)
def test_a_mac_of_another_vendor_is_an_invalid_mac(
    fake: FakeVendor, service: str, vendor: str, new_mac: Any,
) -> None:
    other = panasonic_mac() if vendor == "yealink" else yealink_mac()

    result = adapter(service, vendor_settings(fake)).register(other)

    assert result.outcome is Outcome.INVALID_MAC
    assert other.upper() in result.message  # the vendor's own words, for the operator


@pytest.mark.parametrize(("service", "vendor", "new_mac"), VENDORS)
def test_a_mac_held_by_another_account(
    fake: FakeVendor, service: str, vendor: str, new_mac: Any,
) -> None:
    redirect = adapter(service, vendor_settings(fake))
    mac = new_mac()
    fake.foreign.add(mac.upper())

    assert redirect.register(mac).outcome is Outcome.OWNED_BY_OTHER
    assert redirect.check(mac).outcome is Outcome.OWNED_BY_OTHER
    # Removing it is moot: it does not point at us.
    assert redirect.deregister(mac).outcome is Outcome.NOT_FOUND


@pytest.mark.parametrize(("service", "vendor", "new_mac"), VENDORS)
def test_an_unacceptable_url_is_an_invalid_url(
    fake: FakeVendor, service: str, vendor: str, new_mac: Any,
) -> None:
    settings = vendor_settings(fake, yealink_rps_server_url="boot.example.test/y/",
                               panasonic_rcs_phone_url="cfg.example.test/{MAC}",
                               snom_sraps_phone_url="cfg.example.test/{mac}")

    result = adapter(service, settings).register(new_mac())

    assert result.outcome is Outcome.INVALID_URL


@pytest.mark.parametrize(("service", "vendor", "new_mac"), VENDORS)
def test_wrong_credentials_are_an_auth_failure_that_does_not_echo_the_password(
    fake: FakeVendor, service: str, vendor: str, new_mac: Any,
) -> None:
    settings = vendor_settings(fake, yealink_rps_password="Wr0ng-Pw-123",
                               panasonic_rcs_password="Wr0ng-Pw-123",
                               snom_sraps_password="Wr0ng-Pw-123")

    result = adapter(service, settings).register(new_mac())

    assert result.outcome is Outcome.AUTH_FAILED
    assert "401" in result.message
    assert "Wr0ng-Pw-123" not in result.message


@pytest.mark.parametrize(("service", "vendor", "new_mac"), VENDORS)
@pytest.mark.parametrize(("failure", "words"), [
    ("http500", "HTTP 500"), ("malformed", "malformed"), ("slow", "no answer within 0.5s"),
])
def test_vendor_trouble_is_a_temporary_failure(
    fake: FakeVendor, service: str, vendor: str, new_mac: Any, failure: str, words: str,
) -> None:
    redirect = adapter(service, vendor_settings(fake))
    mac = new_mac()
    fake.fail_next(vendor, failure)

    result = redirect.register(mac)

    assert result.outcome is Outcome.TEMPORARY
    assert words in result.message
    assert redirect.register(mac).outcome is Outcome.REGISTERED  # and it passes


@pytest.mark.parametrize(("service", "vendor", "new_mac"), VENDORS)
def test_a_vendor_that_is_down_is_a_temporary_failure(
    fake: FakeVendor, service: str, vendor: str, new_mac: Any,
) -> None:
    down = f"https://localhost:{fake_vendor.closed_port()}/xmlrpc"
    settings = vendor_settings(fake, yealink_rps_url=down, panasonic_rcs_url=down,
                               snom_sraps_url=down)

    result = adapter(service, settings).register(new_mac())

    assert result.outcome is Outcome.TEMPORARY
    assert "cannot reach" in result.message


@pytest.mark.parametrize(("service", "vendor", "new_mac"), VENDORS)
def test_the_vendor_certificate_is_checked_against_the_configured_bundle_only(
    fake: FakeVendor, service: str, vendor: str, new_mac: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other_ca = fake_vendor.make_tls(tmp_path / "other", "other").ca_file
    # The environment trusting the fake's CA must not matter: only the setting counts.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.tls.ca_file))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(fake.tls.ca_file))

    for bundle in (str(other_ca), ""):  # another CA; the default (certifi) bundle
        result = adapter(service, vendor_settings(fake, redirect_ca_bundle=bundle)) \
            .register(new_mac())
        assert result.outcome is Outcome.TEMPORARY
        assert "certificate verify failed" in result.message
    assert fake.calls == []
