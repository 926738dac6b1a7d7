"""The operators' pages in a real browser (Debian's Chromium, headless, driven by Playwright).

The bootstrap page makes this browser call a Cisco SPA's web interface (a fake one here, a real
HTTP server) and then shows the phone's config fetch; the device page shows what real sipp
phones did with a resync asked for by its button.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from autoprov import tls
from autoprov.config import Settings
from tests.admin_helpers import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    admin_settings,
    admin_url,
    server_spki_hash,
)
from tests.conftest import RunningService, Subscriber, start_provisioning
from tests.fake_spa import FakeSpa
from tests.provisioning_helpers import add_device, fetches, phone_cert
from tests.sipp import Phone
from tests.test_resync import wait_pending_in_proxy

CHROMIUM = "/usr/bin/chromium"
# A model whose browser push an operator changed to POST (template_dir override).
POST_MODEL = "SPA-POST-TEST"
POST_PUSH = """method = "POST"
url = "http://{phone}/admin/resync"
params = ["profile={config_url}$MA.xml"]
"""
TIMEOUT_MS = 15000


@pytest.fixture(scope="module")
def admin(settings: Settings, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Settings, RunningService]]:
    templates = tmp_path_factory.mktemp("templates")
    model_dir = templates / "cisco" / "browser" / POST_MODEL
    model_dir.mkdir(parents=True)
    (model_dir / "resync.toml").write_text(POST_PUSH)
    own = admin_settings(tmp_path_factory.mktemp("admin-var"), settings,
                         template_dir=str(templates))
    running = start_provisioning(own)
    yield own, running
    running.stop()


@pytest.fixture(scope="module")
def browser(admin: tuple[Settings, RunningService]) -> Iterator[Browser]:
    own, _ = admin
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: scripts/install-system-packages.sh installs it")
    with tempfile.TemporaryDirectory(prefix="chromium-") as home, sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync",
                  # Trusted: the test server's own key, and nothing else.
                  f"--ignore-certificate-errors-spki-list={server_spki_hash(own)}"],
            env={**os.environ, "HOME": home})  # Playwright gives it a new empty --user-data-dir too
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(http_credentials={"username": ADMIN_USER,
                                                    "password": ADMIN_PASSWORD})
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


def test_without_the_right_credentials_the_browser_gets_nothing(
    admin: tuple[Settings, RunningService], browser: Browser, conn: psycopg.Connection[Any],
    new_subscriber: Any,
) -> None:
    own, running = admin
    mac = add_device(conn, "cisco", [new_subscriber()])
    for credentials in (None, {"username": ADMIN_USER, "password": "wrong"}):
        context = browser.new_context(http_credentials=credentials)  # type: ignore[arg-type]
        tab = context.new_page()
        answers: list[int] = []
        tab.on("response", lambda reply, seen=answers: seen.append(reply.status))
        try:
            tab.goto(admin_url(own, f"/admin/devices/{mac}"))
            assert mac not in tab.content()
        except PlaywrightError as exc:  # with nothing to send, Chromium shows its error page
            assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
        assert answers and set(answers) == {401}
        context.close()
    running.wait_for_log(f"reason=wrong-credentials path=/admin/devices/{mac}")


def _bootstrap(page: Page, own: Settings, mac: str, spa: FakeSpa) -> None:
    """What the operator does: pick the device, type the phone's address, send."""
    page.goto(admin_url(own, "/admin/bootstrap"))
    page.select_option("#mac", mac)
    page.click("#pick button")
    expect(page.locator("h2")).to_contain_text(mac[-2:])
    page.fill("#phone", spa.address)
    with page.expect_popup() as opened:
        page.click("#push")
    expect(opened.value.locator("body")).to_contain_text("Resync request accepted")


@pytest.mark.parametrize("model,method", [("SPA504G", "GET"), (POST_MODEL, "POST")])
def test_bootstrap_page_has_the_browser_call_the_phone_and_shows_its_fetch(
    admin: tuple[Settings, RunningService], page: Page, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path, model: str, method: str,
) -> None:
    own, _ = admin
    mac = add_device(conn, "cisco", [new_subscriber()], model=model)
    profile = f"https://{own.public_host}:{own.https_port}/device/autoprov/config/$MA.xml"
    with FakeSpa(mac, phone_cert(own, tmp_path, "cisco", mac), tls.dev_ca_path(own)) as spa:
        _bootstrap(page, own, mac, spa)

        [call] = [c for c in spa.calls if c.path != "/favicon.ico"]
        assert (call.method, call.path) == (method, "/admin/resync")
        if method == "GET":
            assert call.query == profile
        else:
            assert call.form == {"profile": [profile]}
        assert spa.wait_for_fetch() == (profile.replace("$MA", mac), 200)

    status = page.locator("#push-status")
    expect(status).to_contain_text("The phone fetched its configuration")
    expect(status).to_have_attribute("data-state", "done")
    expect(page.locator("#push-fetches")).to_contain_text(
        f"{mac}.xml over TLS (full config) from 127.0.0.1")
    assert [(port, file) for port, file, *_ in fetches(conn, mac)] == [("tls", f"{mac}.xml")]


def test_bootstrap_page_refuses_an_address_that_is_not_one(
    admin: tuple[Settings, RunningService], page: Page, conn: psycopg.Connection[Any],
    new_subscriber: Any,
) -> None:
    own, _ = admin
    mac = add_device(conn, "cisco", [new_subscriber()])
    page.goto(admin_url(own, f"/admin/bootstrap?mac={mac}"))
    opened: list[Page] = []
    page.context.on("page", lambda tab: opened.append(tab))
    for wrong in ("192.168.1.300", "evil.example/x?", "user@10.0.0.1"):
        page.fill("#phone", wrong)
        page.click("#push")
        expect(page.locator("#push-status")).to_have_attribute("data-state", "failed")
    page.wait_for_timeout(300)
    assert opened == []


def test_bootstrap_page_sends_other_vendors_to_their_redirect_service(
    admin: tuple[Settings, RunningService], page: Page, conn: psycopg.Connection[Any],
    new_subscriber: Any,
) -> None:
    own, _ = admin
    mac = add_device(conn, "yealink", [new_subscriber()])
    page.goto(admin_url(own, f"/admin/bootstrap?mac={mac}"))
    expect(page.locator("#problem")).to_contain_text("redirect service")
    assert page.locator("#push-form").count() == 0


@dataclass
class Registered:
    mac: str
    sub: Subscriber
    phone: Phone


@pytest.fixture
def registered_cisco(kamailio: RunningService, settings: Settings,
                     conn: psycopg.Connection[Any], new_subscriber: Any,
                     phone_for: Any) -> Callable[[], Registered]:
    """A Cisco device whose sipp phone registered and took the NOTIFY its REGISTER caused."""

    def make() -> Registered:
        sub = new_subscriber()
        mac = add_device(conn, "cisco", [sub])
        phone = phone_for(sub)
        wait_pending_in_proxy(settings, sub.aor)
        with phone.answer("notify-accept") as uas:
            assert phone.register().ok
            assert uas.result().ok
        return Registered(mac, sub, phone)

    return make


def test_device_page_shows_registration_and_the_outcome_of_its_resync_button(
    admin: tuple[Settings, RunningService], page: Page,
    registered_cisco: Callable[[], Registered],
) -> None:
    own, _ = admin
    dev = registered_cisco()
    page.goto(admin_url(own, "/admin/"))
    row = page.locator(f"#device-{dev.mac}")
    expect(row).to_contain_text(f"1: {dev.sub.aor} registered")
    expect(row).to_contain_text("cisco")
    row.get_by_role("link").first.click()

    expect(page.locator("h1")).to_have_text(":".join(dev.mac[i:i + 2] for i in range(0, 12, 2)))
    expect(page.locator("#lines")).to_contain_text("registered (1 contact)")
    expect(page.locator("#redirect")).to_contain_text("no redirect service")
    with dev.phone.answer("notify-challenge-401") as uas:
        page.get_by_role("button", name="Resync").click()
        expect(page.locator("#last-resync .state")).to_have_text("done")
        phone_side = uas.result()
    assert phone_side.ok and "AUTH-VERIFIED" in phone_side.output, phone_side.output
    outcome = page.locator("#last-resync .contacts li")
    expect(outcome).to_have_count(1)
    expect(outcome).to_contain_text(f"{dev.sub.aor}")
    expect(outcome).to_contain_text("accepted 200 after challenge")
    expect(page.locator("#last-resync")).to_contain_text("(admin-page,")

    page.goto(admin_url(own, "/admin/"))
    expect(page.locator(f"#device-{dev.mac}")).to_contain_text("done; 1 accepted")
