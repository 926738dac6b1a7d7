"""Property: no bootstrap answer, for any vendor, model, device or file, holds a line's secrets.

Secrets carry a marker character (a snowman) that no bootstrap file contains otherwise, so a
leak cannot hide behind a coincidence, and each is also looked for as the vendor escapes it.
"""

from __future__ import annotations

import secrets
from typing import Any

import psycopg
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoprov import db
from autoprov.config import Settings
from provisioning_wsgi import vendors
from provisioning_wsgi.render import Device, Line, Renderer
from tests.conftest import RunningService
from tests.provisioning_helpers import OUI, bootstrap_url

MARK = "\u2603"
# Postgres text cannot hold NUL; Kamailio's columns are 64 characters.
TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
               min_size=0, max_size=30)
SECRET = TEXT.map(lambda s: MARK + s)
MODEL = st.sampled_from(["SPA504G", "SPA525G2", "SPA303", "T46U", "T46G", "T54W", "T31P",
                         "W52P", "KX-UT136", "KX-HDV230", "KX-TGP600", "D785", "VVX450",
                         "GRP2614", "gxp2170", "X4U", "X", "weird/model"])
MAC = st.sampled_from(sorted(OUI.values())).flatmap(
    lambda oui: st.binary(min_size=3, max_size=3).map(lambda b: oui + b.hex()))
LINE = st.builds(Line, number=st.integers(1, 64), username=SECRET, domain=TEXT,
                 password=SECRET, display_name=TEXT)


def leaked(body: bytes, vendor: vendors.Vendor, line: Line) -> list[str]:
    text = body.decode()
    return [v for v in (line.username, line.password)
            if v in text or vendor.escape(v) in text]


@given(vendor=st.sampled_from(sorted(vendors.VENDORS)), model=MODEL, mac=MAC,
       lines=st.lists(LINE, max_size=4, unique_by=lambda line: line.number),
       public_host=st.sampled_from(["prov.example", "::1"]))
@settings(max_examples=300, deadline=None)
def test_no_bootstrap_file_holds_a_line_secret(vendor: str, model: str, mac: str,
                                               lines: list[Line], public_host: str) -> None:
    module = vendors.get(vendor)
    device = Device(1, mac, vendor, model)
    renderer = Renderer(Settings(public_host=public_host))
    names = module.files_for(model if "/" not in model else "X", mac)
    full_leaks = []
    for file in names:
        requested = vendors.parse_as(module, file)
        if requested is None:  # a model whose common file name no phone would ask for
            continue
        body = renderer.bootstrap(requested, device if requested.mac else None).body
        for line in lines:
            assert leaked(body, module, line) == []
        if requested.mac and lines:
            full = renderer.config(requested, device, lines).body
            full_leaks += leaked(full, module, lines[0])
    # The full config of the same device does carry them (in one of its files, Poly's master
    # file holds none): the test would see a leak.
    assert full_leaks or not lines


@given(vendor=st.sampled_from(sorted(vendors.VENDORS)), model=MODEL,
       creds=st.lists(st.tuples(SECRET, SECRET), min_size=1, max_size=3))
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_bootstrap_answer_over_http_holds_a_line_secret(
    provisioning: RunningService, settings: Settings, vendor: str, model: str,
    creds: list[tuple[str, str]],
) -> None:
    module = vendors.get(vendor)
    mac = OUI[vendor] + secrets.token_hex(3)
    lines: list[Line] = []
    with db.connect(settings, autocommit=True) as conn:
        device_id = _insert_device(conn, mac, vendor, model)
        for number, (username, password) in enumerate(creds, 1):
            sub = conn.execute(
                "INSERT INTO subscriber (username, domain, password) VALUES (%s, %s, %s)"
                " RETURNING id", (username + secrets.token_hex(4), "example.test", password),
            ).fetchone()
            assert sub is not None
            conn.execute("INSERT INTO autoprov.device_line (device_id, line_no, subscriber_id)"
                         " VALUES (%s, %s, %s)", (device_id, number, sub[0]))
            lines.append(Line(number, username, "example.test", password, ""))
    session = requests.Session()
    session.trust_env = False
    for file in module.files_for(model if "/" not in model else "X", mac):
        reply = session.get(bootstrap_url(settings, file))
        assert reply.status_code in (200, 404), file
        for line in lines:
            assert leaked(reply.content, module, line) == []


def _insert_device(conn: psycopg.Connection[Any], mac: str, vendor: str, model: str) -> int:
    row = conn.execute("INSERT INTO autoprov.device (mac, vendor, model) VALUES (%s, %s, %s)"
                       " RETURNING id", (mac, vendor, model)).fetchone()
    assert row is not None
    return int(row[0])
