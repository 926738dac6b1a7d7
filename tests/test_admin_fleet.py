"""The pages that change the fleet, in Chromium: add, edit and delete a device, create a
subscriber, check and import a CSV, export one; their forms refused without the CSRF token."""

from __future__ import annotations

import re
import secrets
from typing import Any

import psycopg
from playwright.sync_api import Page, expect

from autoprov.config import Settings
from tests.admin_helpers import admin_url, browser_session
from tests.conftest import RunningService
from tests.provisioning_helpers import new_mac
from tests.test_admin_browser import admin, browser, page  # noqa: F401 (fixtures)

HEADER = "mac,vendor,model,line,username,domain,password,display_name"


def test_a_device_is_added_edited_and_deleted_from_the_pages(
    admin: tuple[Settings, RunningService], page: Page,  # noqa: F811
    conn: psycopg.Connection[Any], new_subscriber: Any,
) -> None:
    own, running = admin
    first, second = new_subscriber(), new_subscriber()
    mac = new_mac("yealink")
    dashed = "-".join(mac[i:i + 2] for i in range(0, 12, 2)).upper()

    page.goto(admin_url(own, "/admin/"))
    page.click("text=Add a device")
    page.fill("#mac", dashed)
    page.select_option("#vendor", "yealink")
    page.fill("#model", "T46U")
    page.fill("[name=line-1-number]", "1")
    page.fill("[name=line-1-subscriber]", first.aor)
    page.fill("[name=line-1-name]", "Reception <desk>")
    page.click("#save")

    expect(page.locator("h1")).to_have_text(":".join(mac[i:i + 2] for i in range(0, 12, 2)))
    expect(page.locator("#lines")).to_contain_text(f"{first.aor} (Reception <desk>)")

    page.click("#edit")
    page.fill("#model", "T54W")
    page.fill("[name=line-1-subscriber]", "")
    page.fill("[name=line-2-number]", "2")
    page.fill("[name=line-2-subscriber]", second.aor)
    page.click("#save")

    expect(page.locator("#model")).to_have_text("T54W")
    expect(page.locator("#lines")).to_contain_text(second.aor)
    expect(page.locator("#lines")).not_to_contain_text(first.aor)
    reasons = conn.execute("SELECT r.reason FROM autoprov.resync_request r"
                           " JOIN autoprov.device d ON d.id = r.device_id WHERE d.mac = %s",
                           (mac,)).fetchall()
    assert ("config-change",) in reasons

    page.click("#edit")
    page.check("[name=confirm]")
    page.click("#delete")
    expect(page.locator("h1")).to_have_text("Devices")
    assert conn.execute("SELECT 1 FROM autoprov.device WHERE mac = %s", (mac,)).fetchone() \
        is None
    running.wait_for_log(f"change client=127.0.0.1 port=admin device={mac} deleted")


def test_a_refused_device_form_names_the_faults_and_keeps_what_was_typed(
    admin: tuple[Settings, RunningService], page: Page,  # noqa: F811
) -> None:
    own, _ = admin
    page.goto(admin_url(own, "/admin/devices/new"))
    page.fill("#mac", "00:15:65:zz")
    page.fill("#model", "T46U")
    page.fill("[name=line-1-number]", "70")
    page.fill("[name=line-1-subscriber]", "nobody")
    page.click("#save")

    errors = page.locator("#errors")
    expect(errors.locator("[data-field=mac]")).to_be_visible()
    expect(errors.locator("[data-field='lines[0].line']")).to_be_visible()
    expect(errors.locator("[data-field='lines[0].subscriber']")).to_be_visible()
    expect(page.locator("#mac")).to_have_value("00:15:65:zz")


def test_a_subscriber_is_created_from_the_pages_and_its_password_never_shown(
    admin: tuple[Settings, RunningService], page: Page,  # noqa: F811
    conn: psycopg.Connection[Any],
) -> None:
    own, _ = admin
    user, password = "p" + secrets.token_hex(4), "pw-" + secrets.token_hex(6)
    page.goto(admin_url(own, "/admin/subscribers"))
    page.fill("#username", user)
    page.fill("#domain", "pages.test")
    page.fill("#password", password)
    page.click("#create")

    expect(page.locator("#subscribers")).to_contain_text(f"{user}@pages.test")
    assert password not in page.content()
    assert conn.execute("SELECT password FROM subscriber WHERE username = %s",
                        (user,)).fetchone() == (password,)

    page.fill("#username", user)
    page.fill("#domain", "pages.test")
    page.fill("#password", "x")
    page.click("#create")
    expect(page.locator("#errors [data-field=username]")).to_be_visible()


def test_a_csv_is_checked_row_by_row_then_imported_and_exported(
    admin: tuple[Settings, RunningService], page: Page,  # noqa: F811
    conn: psycopg.Connection[Any],
) -> None:
    own, _ = admin
    good, user = new_mac("cisco"), "c" + secrets.token_hex(4)
    rows = [f"{good},cisco,SPA504G,1,{user},pages.test,secret-pw,Front",
            f"{good},cisco,SPA504G,2,{user}b,pages.test,secret-pw2,Back"]
    bad = "00:15,cisco,SPA504G,1,x,pages.test,pw,"
    page.goto(admin_url(own, "/admin/import"))
    page.fill("#csv", "\n".join([HEADER, rows[0], bad, rows[1]]) + "\n")
    page.click("#check")

    expect(page.locator("#verdict")).to_have_attribute("data-state", "failed")
    expect(page.locator("#row-3")).to_have_class("problem")
    expect(page.locator("#row-3")).to_contain_text("mac: invalid MAC address")
    expect(page.locator("#row-2")).to_have_class("fine")
    assert "secret-pw" not in page.locator("#preview").inner_text()

    page.click("#import")
    expect(page.locator("#verdict")).to_contain_text("nothing was imported")
    assert conn.execute("SELECT 1 FROM autoprov.device WHERE mac = %s", (good,)).fetchone() \
        is None

    # The good rows from a spreadsheet file, as an operator picks it.
    page.set_input_files("#csv-file", files=[{
        "name": "rollout.csv", "mimeType": "text/csv",
        "buffer": ("\ufeff" + "\r\n".join([HEADER, *rows]) + "\r\n").encode()}])
    expect(page.locator("#csv")).to_have_value(re.compile(f"^{HEADER}"))
    page.click("#import")
    expect(page.locator("#verdict")).to_contain_text("Imported 2 rows: 1 device(s), 2 line(s)")

    exported = browser_session(own).get(admin_url(own, "/admin/export.csv"))
    assert exported.headers["Content-Type"].startswith("text/csv")
    assert f"{good},cisco,SPA504G,1,{user},pages.test,,Front" in exported.text.splitlines()
    assert "secret-pw" not in exported.text


def test_the_forms_are_refused_without_the_pages_token(
    admin: tuple[Settings, RunningService],  # noqa: F811
) -> None:
    own, running = admin
    session = browser_session(own)
    for path, form in (("/admin/devices", {"mac": new_mac("cisco"), "vendor": "cisco",
                                           "model": "SPA504G"}),
                       ("/admin/subscribers", {"username": "csrf", "domain": "x.test",
                                               "password": "pw"}),
                       ("/admin/import", {"csv": HEADER, "action": "import"}),
                       (f"/admin/devices/{new_mac('cisco')}/delete", {"confirm": "on"})):
        reply = session.post(admin_url(own, path), data=form, allow_redirects=False)
        assert reply.status_code == 403, path
    log = running.wait_for_log("reason=csrf path=/admin/import")
    assert re.search(r"denied client=127\.0\.0\.1 port=admin reason=csrf path=/admin/devices$",
                     log, re.MULTILINE)
