"""The REST API end to end: a CRM's calls against the real service and database, every answer
checked against the OpenAPI document (tests/api_helpers.py)."""

from __future__ import annotations

import json
import re
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from jsonschema import Draft202012Validator

from autoprov.config import Settings
from tests.admin_helpers import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    admin_settings,
    admin_url,
    browser_session,
)
from tests.api_helpers import Api, new_token, start_api
from tests.conftest import autoprov_cli, start_provisioning
from tests.provisioning_helpers import MODELS, client, config_url, device_file, new_mac, phone_cert


@pytest.fixture(scope="module")
def api(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    # No admin_password: the pages are off, the API (its own tokens) is on.
    own = admin_settings(tmp_path_factory.mktemp("api-var"), settings, admin_password="")
    running = start_provisioning(own)
    try:
        yield start_api(own, running)
    finally:
        running.stop()


def subscriber(api: Api, password: str | None = None) -> dict[str, Any]:
    body = {"username": "u" + secrets.token_hex(5), "domain": "api.test",
            "password": password or secrets.token_hex(8)}
    reply = api.call("POST", "/subscribers", json=body)
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


def device(api: Api, vendor: str = "cisco", lines: list[dict[str, Any]] | None = None,
           model: str | None = None) -> dict[str, Any]:
    body = {"mac": new_mac(vendor), "vendor": vendor, "model": model or MODELS[vendor],
            "lines": lines if lines is not None else
            [{"line": 1, "subscriber": subscriber(api)["aor"], "display_name": "Front desk"}]}
    reply = api.call("POST", "/devices", json=body)
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


def fields(reply: Any) -> dict[str, str]:
    assert reply.headers["Content-Type"] == "application/problem+json"
    problem = reply.json()
    assert problem["status"] == reply.status_code
    return {e["field"]: e["detail"] for e in problem.get("errors", [])}


def test_the_openapi_document_is_served_without_a_token_and_its_schemas_are_valid(
        api: Api) -> None:
    reply = browser_session(api.settings, auth=None).get(
        admin_url(api.settings, "/api/v1/openapi.json"))

    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "application/json"
    document = reply.json()
    assert document["openapi"].startswith("3.1")
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    assert {"/subscribers", "/devices", "/devices/{mac}", "/devices/import",
            "/devices/{mac}/resync", "/resync/{id}"} <= set(document["paths"])


def test_no_token_or_basic_login_gets_401_with_a_bearer_challenge(api: Api) -> None:
    for headers in ({}, {"Authorization": f"Basic {ADMIN_USER}:{ADMIN_PASSWORD}"},
                    {"Cookie": "__Host-autoprov-csrf=x"}):
        reply = api.call("GET", "/devices", token=None, headers=headers)
        assert reply.status_code == 401
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        assert fields(reply) == {}


def test_an_unknown_or_revoked_token_is_refused_and_logged_for_fail2ban(api: Api) -> None:
    name = "gone-" + secrets.token_hex(3)
    revoked = new_token(api.settings, name)
    assert api.call("GET", "/vendors", token=revoked).status_code == 200
    autoprov_cli(api.settings, "token", "revoke", name, check=True)
    guess = secrets.token_urlsafe(32)

    for token in (revoked, guess):
        reply = api.call("GET", "/vendors", token=token)
        assert reply.status_code == 401
        assert 'error="invalid_token"' in reply.headers["WWW-Authenticate"]

    deadline = time.monotonic() + 5  # the log writer thread writes each line a moment later
    while True:
        log = api.running.log()
        denied = [line for line in log.splitlines() if "denied" in line]
        if len(denied) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(denied) == 2
    filter_line = re.compile(r" WARNING denied client=127\.0\.0\.1 port=admin "
                             r"reason=wrong-credentials path=/api/v1/vendors$")
    assert all(filter_line.search(line) for line in denied)
    assert revoked not in log and guess not in log


def test_token_list_shows_names_and_use_never_the_token(api: Api) -> None:
    api.call("GET", "/vendors")
    listed = autoprov_cli(api.settings, "token", "list", "--json", check=True).stdout
    rows = {row["name"]: row for row in json.loads(listed)}

    mine = rows[api.token_name]
    assert mine["read_only"] is False and mine["last_used_at"] is not None
    assert api.token not in listed
    text = autoprov_cli(api.settings, "token", "list", check=True).stdout
    assert "read-write" in text and api.token not in text


def test_a_read_only_token_reads_and_gets_403_on_every_write(api: Api) -> None:
    reader = new_token(api.settings, "ro-" + secrets.token_hex(3), "--read-only")
    mac = device(api)["mac"]

    assert api.call("GET", f"/devices/{mac}", token=reader).status_code == 200
    for method, path, body in (("POST", "/devices", {"mac": new_mac("cisco")}),
                               ("PATCH", f"/devices/{mac}", {"model": "SPA509G"}),
                               ("DELETE", f"/devices/{mac}", None),
                               ("POST", f"/devices/{mac}/resync", None)):
        reply = api.call(method, path, token=reader, json=body)
        assert reply.status_code == 403, (method, path)
        assert "read-only" in reply.json()["detail"]
    assert api.call("GET", f"/devices/{mac}").json()["model"] == MODELS["cisco"]


def test_subscribers_are_created_listed_changed_and_deleted_never_showing_a_password(
        api: Api, conn: psycopg.Connection[Any]) -> None:
    created = subscriber(api, password="first-secret")
    aor = created["aor"]
    assert created == {"username": aor.split("@")[0], "domain": "api.test", "aor": aor,
                       "lines": []}

    again = api.call("POST", "/subscribers", json={"username": created["username"],
                                                   "domain": "api.test", "password": "x"})
    assert again.status_code == 409 and "username" in fields(again)

    changed = api.call("PATCH", f"/subscribers/{aor}", json={"password": "second-secret"})
    assert changed.status_code == 200 and "password" not in changed.text
    stored = conn.execute("SELECT password FROM subscriber WHERE username = %s",
                          (created["username"],)).fetchone()
    assert stored == ("second-secret",)

    page = api.call("GET", "/subscribers?domain=api.test&limit=1000").json()
    assert aor in [s["aor"] for s in page["items"]]
    assert "secret" not in json.dumps(page)

    assert api.call("DELETE", f"/subscribers/{aor}").status_code == 204
    assert api.call("GET", f"/subscribers/{aor}").status_code == 404


def test_a_subscriber_in_use_by_a_line_cannot_be_deleted(api: Api) -> None:
    made = device(api)
    aor = made["lines"][0]["aor"]

    reply = api.call("DELETE", f"/subscribers/{aor}")

    assert reply.status_code == 409
    assert made["mac"] in reply.json()["detail"]
    assert api.call("GET", f"/subscribers/{aor}").json()["lines"] == [
        {"mac": made["mac"], "line": 1}]


def test_subscriber_faults_are_named(api: Api) -> None:
    reply = api.call("POST", "/subscribers", json={"username": "a@b", "password": "",
                                                  "extra": 1})
    assert reply.status_code == 422
    assert set(fields(reply)) == {"username", "domain", "password", "extra"}

    huge = json.dumps({"username": "u", "domain": "d", "password": "p" * 70_000})
    reply = api.call("POST", "/subscribers", data=huge,
                     headers={"Content-Type": "application/json"})
    assert reply.status_code == 413 and reply.json()["detail"] == "at most 65536 bytes"
    assert api.call("POST", "/subscribers", data="{not json",
                    headers={"Content-Type": "application/json"}).status_code == 400
    assert api.call("POST", "/subscribers", data="username=a",
                    headers={"Content-Type": "application/x-www-form-urlencoded"}
                    ).status_code == 415


def test_a_device_is_created_shown_in_any_spelling_changed_and_deleted(
        api: Api, conn: psycopg.Connection[Any]) -> None:
    first, second = subscriber(api), subscriber(api)
    made = device(api, "yealink", [{"line": 1, "subscriber": first["aor"]}])
    mac = made["mac"]
    assert made["lines"] == [{"line": 1, "aor": first["aor"], "display_name": "",
                              "registered": False, "contacts": 0}]
    assert made["redirect"]["service"] == "yealink-rps"

    cli = json.loads(autoprov_cli(api.settings, "device", "show", mac, "--json",
                                  check=True).stdout)
    colons = ":".join(mac[i:i + 2] for i in range(0, 12, 2))
    for spelling in (mac, colons.upper(), colons.replace(":", "-"),
                     f"{mac[:4]}.{mac[4:8]}.{mac[8:]}"):
        shown = api.call("GET", f"/devices/{spelling}").json()
        assert {k: shown[k] for k in ("mac", "vendor", "model", "lines", "created_at")} == \
            {k: cli[k] for k in ("mac", "vendor", "model", "lines", "created_at")}

    changed = api.call("PATCH", f"/devices/{colons}", json={
        "model": "T54W", "lines": [{"line": 2, "subscriber": second["aor"],
                                    "display_name": "Sales"}]})
    assert changed.status_code == 200, changed.text
    after = changed.json()
    assert after["model"] == "T54W"
    assert [(ln["line"], ln["aor"], ln["display_name"]) for ln in after["lines"]] == \
        [(2, second["aor"], "Sales")]
    # The schema's triggers resync the device after a change, as after a DBA's UPDATE.
    assert after["resync"]["reason"] == "config-change"
    reasons = conn.execute(
        "SELECT r.reason FROM autoprov.resync_request r JOIN autoprov.device d"
        " ON d.id = r.device_id WHERE d.mac = %s", (mac,)).fetchall()
    assert ("config-change",) in reasons

    assert api.call("DELETE", f"/devices/{colons}").status_code == 204
    assert api.call("GET", f"/devices/{mac}").status_code == 404
    assert api.call("DELETE", f"/devices/{mac}").status_code == 404


def test_device_faults_name_their_field(api: Api) -> None:
    known = subscriber(api)["aor"]
    reply = api.call("POST", "/devices", json={
        "mac": "00:15:65:zz:00:00", "vendor": "cisco", "model": " ",
        "lines": [{"line": 0, "subscriber": known}, {"line": 2, "subscriber": "nobody"},
                  {"line": 2, "subscriber": known, "display_name": 7}]})
    assert reply.status_code == 422
    assert set(fields(reply)) == {"mac", "model", "lines[0].line", "lines[1].subscriber",
                                  "lines[2].line", "lines[2].display_name"}

    mac = new_mac("cisco")
    reply = api.call("POST", "/devices", json={
        "mac": mac, "vendor": "acme", "model": "X"})
    assert reply.status_code == 422 and set(fields(reply)) == {"vendor"}
    reply = api.call("POST", "/devices", json={
        "mac": mac, "vendor": "cisco", "model": "SPA504G",
        "lines": [{"line": 1, "subscriber": known}, {"line": 3, "subscriber": "ghost@api.test"}]})
    assert reply.status_code == 422 and set(fields(reply)) == {"lines[1].subscriber"}
    # Nothing of a refused request was written.
    assert api.call("GET", f"/devices/{mac}").status_code == 404

    existing = device(api)["mac"]
    reply = api.call("POST", "/devices", json={"mac": existing.upper(), "vendor": "cisco",
                                               "model": "SPA504G"})
    assert reply.status_code == 409 and set(fields(reply)) == {"mac"}
    reply = api.call("PATCH", f"/devices/{existing}", json={"lines": "all"})
    assert reply.status_code == 422 and set(fields(reply)) == {"lines"}
    assert api.call("GET", "/devices/not-a-mac").status_code == 404


def test_a_serial_number_is_given_changed_and_checked_like_any_field(
        api: Api, conn: psycopg.Connection[Any]) -> None:
    mac = new_mac("grandstream")
    made = api.call("POST", "/devices", json={"mac": mac, "vendor": "grandstream",
                                              "model": "GXP2170", "serial_number": "20ZE1A2B"})
    assert made.status_code == 201, made.text
    assert made.json()["serial_number"] == "20ZE1A2B"
    assert made.json()["redirect"]["service"] == "grandstream-gdms"

    changed = api.call("PATCH", f"/devices/{mac}", json={"serial_number": "20ZE9F9F"})
    assert changed.status_code == 200 and changed.json()["serial_number"] == "20ZE9F9F"
    # A new serial number means a new registration with GDMS (sql/019), as after an UPDATE.
    assert conn.execute("SELECT count(*) FROM autoprov.redirect_job WHERE mac = %s"
                        " AND action = 'register'", (mac,)).fetchone() == (2,)

    for bad in ("20ZE 1A2B", "", "x" * 65, 7):
        reply = api.call("PATCH", f"/devices/{mac}", json={"serial_number": bad})
        assert reply.status_code == 422 and set(fields(reply)) == {"serial_number"}
    assert api.call("GET", f"/devices/{mac}").json()["serial_number"] == "20ZE9F9F"


def test_devices_are_listed_by_vendor_model_and_registration_a_page_at_a_time(
        api: Api) -> None:
    model = "page-" + secrets.token_hex(3)
    macs = sorted(device(api, "panasonic", model=model)["mac"] for _ in range(5))

    seen, cursor, pages = [], "", 0
    while True:
        reply = api.call("GET", f"/devices?model={model}&limit=2&cursor={cursor}")
        page = reply.json()
        seen += [d["mac"] for d in page["items"]]
        pages += 1
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert seen == macs and pages == 3

    def listed(query: str) -> list[str]:
        return [d["mac"] for d in api.call("GET", f"/devices?model={model}&{query}")
                .json()["items"]]

    assert listed("vendor=panasonic&registered=false") == macs
    assert listed("registered=true") == []
    assert listed("vendor=cisco") == []
    assert api.call("GET", "/devices?registered=maybe").status_code == 400
    assert api.call("GET", "/devices?limit=0").status_code == 400
    assert api.call("GET", "/devices?cursor=nonsense").status_code == 400


def test_a_resync_is_accepted_and_its_state_read_waiting_a_bounded_time(api: Api) -> None:
    mac = device(api)["mac"]

    reply = api.call("POST", f"/devices/{mac.upper()}/resync")

    assert reply.status_code == 202
    accepted = reply.json()
    assert reply.headers["Location"] == accepted["status_url"]
    state = api.call("GET", f"/resync/{accepted['request_id']}?wait=0.5").json()
    assert state["request_id"] == accepted["request_id"] and state["mac"] == mac
    # Creating its line asked for a resync already (a trigger): the two coalesce into one.
    assert state["reason"] == "config-change" and state["state"] == "pending"
    assert state["succeeded"] is False
    assert api.call("GET", f"/resync/{accepted['request_id']}?wait=21").status_code == 400
    assert api.call("GET", "/resync/999999999").status_code == 404
    assert api.call("POST", f"/devices/{new_mac('cisco')}/resync").status_code == 404


def test_fetches_redirect_state_and_vendors(api: Api) -> None:
    cisco = device(api)["mac"]
    yealink = device(api, "yealink")["mac"]

    assert api.call("GET", f"/devices/{cisco}/fetches").json() == {"mac": cisco,
                                                                   "fetches": []}
    assert api.call("GET", f"/devices/{cisco}/redirect").json()["redirect"] is None
    assert api.call("GET", f"/devices/{yealink}/redirect").json()["redirect"][
        "service"] == "yealink-rps"
    # Nothing failed, so nothing to retry: the SQL function's own refusal.
    retry = api.call("POST", f"/devices/{cisco}/redirect/retry")
    assert retry.status_code == 409 and "no redirect" in retry.json()["detail"]

    vendors = {v["name"]: v for v in api.call("GET", "/vendors").json()["items"]}
    assert {"cisco", "panasonic", "yealink"} <= set(vendors)
    assert MODELS["cisco"] in [m["model"] for m in vendors["cisco"]["models"]]


def test_a_password_with_markup_characters_reaches_the_phone_intact(
        api: Api, tmp_path: Path) -> None:
    password = 'p&<"w\'>rd'
    sub = subscriber(api, password=password)
    mac = device(api, "cisco", [{"line": 1, "subscriber": sub["aor"],
                                 "display_name": "A&B <sales>"}])["mac"]

    reply = client(api.settings, phone_cert(api.settings, tmp_path, "cisco", mac)).get(
        config_url(api.settings, device_file("cisco", mac)))

    assert reply.status_code == 200
    assert "p&amp;&lt;&quot;w" in reply.text or "p&amp;&lt;\"w" in reply.text
    root = ET.fromstring(reply.text)  # noqa: S314 - our own output under test
    assert root.findtext("Password_1_") == password
    assert root.findtext("Display_Name_1_") == "A&B <sales>"


def test_writes_are_logged_with_the_token_name_never_the_token(api: Api) -> None:
    mac = device(api)["mac"]
    api.call("DELETE", f"/devices/{mac}")

    log = api.running.wait_for_log(f"path=/api/v1/devices/{mac} status=204")
    name = next(line for line in log.splitlines() if f"/devices/{mac} status=204" in line)
    assert re.search(r" INFO api client=127\.0\.0\.1 port=admin token=crm-[0-9a-f]{6} "
                     rf"method=DELETE path=/api/v1/devices/{mac} status=204$", name)
    assert re.search(r" INFO api client=127\.0\.0\.1 port=admin token=crm-[0-9a-f]{6} "
                     r"method=POST path=/api/v1/devices status=201$", log, re.MULTILINE)
    assert api.token not in log


def test_unknown_paths_and_methods_answer_problems_never_html(api: Api) -> None:
    reply = api.call("GET", "/nothing-here")
    assert reply.status_code == 404 and fields(reply) == {}
    reply = api.call("PUT", "/devices")
    assert reply.status_code == 405 and set(reply.headers["Allow"].split(", ")) == {
        "GET", "POST"}
    assert reply.headers["Content-Type"] == "application/problem+json"
    # The pages are off (no admin_password); the API is not.
    assert browser_session(api.settings, auth=None).get(
        admin_url(api.settings, "/admin/")).status_code == 404


def test_token_names_are_plain_words_and_taken_once(api: Api) -> None:
    taken = autoprov_cli(api.settings, "token", "create", api.token_name)
    assert taken.returncode == 2 and "exists" in taken.stderr and taken.stdout == ""
    bad = autoprov_cli(api.settings, "token", "create", "two words")
    assert bad.returncode == 2 and "invalid token name" in bad.stderr
    gone = autoprov_cli(api.settings, "token", "revoke", "never-made")
    assert gone.returncode == 2 and "no live token" in gone.stderr


def test_every_documented_answer_was_seen(api: Api) -> None:
    """Runs last in this module: the answers above covered each path of the document."""
    seen = {template for _, template, _ in api.checked}
    assert set(api.document["paths"]) - {"/devices/import"} <= seen
