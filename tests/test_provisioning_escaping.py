"""Hostile passwords and display names: each format carries them or at least cannot be broken.

Cisco XML carries every character exactly. Yealink and Panasonic files are line-based with no
escape for a line break, so a line break in a value becomes a space: it can never start a key.
"""

from __future__ import annotations

import re
import sys
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import psycopg
import pytest

from autoprov.config import Settings
from provisioning_wsgi.vendors import cisco
from provisioning_wsgi.vendors.base import _NOT_XML_CHAR, LINE_BREAK_OR_CONTROL, single_line
from tests.conftest import RunningService
from tests.provisioning_helpers import add_device, client, config_url, device_file, phone_cert

PASSWORD = 'p<a&s>s"w\'o\nrd\r\tend'
NAME_INJECTING_XML = 'Bob </Display_Name_1_><Password_2_>evil</Password_2_> & "co"'
NAME_INJECTING_LINES = 'Bob\naccount.1.password = evil\r\nSIP_PASS_1="evil"\n<&>"'


def fetch(settings: Settings, conn: psycopg.Connection[Any], new_subscriber: Any,
          tmp_path: Path, vendor: str, display_name: str) -> tuple[str, Any]:
    sub = new_subscriber(password=PASSWORD)
    mac = add_device(conn, vendor, [sub], display_names={1: display_name})
    reply = client(settings, phone_cert(settings, tmp_path, vendor, mac)).get(
        config_url(settings, device_file(vendor, mac)))
    assert reply.status_code == 200
    return reply.content.decode(), sub


def test_cisco_xml_carries_every_character_exactly(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    body, sub = fetch(settings, conn, new_subscriber, tmp_path, "cisco", NAME_INJECTING_XML)

    root = ET.fromstring(body)  # noqa: S314 - our own output under test

    assert root.findtext("Password_1_") == PASSWORD
    assert root.findtext("Display_Name_1_") == NAME_INJECTING_XML
    assert root.findtext("User_ID_1_") == sub.username
    assert root.findtext("Password_2_") == ""
    assert len(root.findall("Password_2_")) == 1


@pytest.mark.parametrize("name", [NAME_INJECTING_LINES, "\u2028account.1.password = evil"])
def test_yealink_values_cannot_start_a_new_key(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path, name: str,
) -> None:
    body, sub = fetch(settings, conn, new_subscriber, tmp_path, "yealink", name)
    lines = body.split("\n")

    assert lines[0] == "#!version:1.0.0.1"
    assert all(re.match(r"^[a-z0-9_.]+ = .*$", line) for line in lines[1:-1]), lines
    values = dict(line.split(" = ", 1) for line in lines[1:-1])
    assert [line for line in lines if line.startswith("account.1.password =")] == \
        ["account.1.password = p<a&s>s\"w'o rd  end"]
    assert values["account.1.user_name"] == sub.username
    assert "evil" not in values["account.1.password"]
    assert values["account.1.label"] == re.sub("[\r\n\u2028]", " ", name)


# Where each XML vendor keeps line 1's password and display name: (element path, attribute).
XML_FIELDS = {
    "snom": (("phone-settings/user_pass[@idx='1']", None),
             ("phone-settings/user_realname[@idx='1']", None)),
    "polycom": ((".", "reg.1.auth.password"), (".", "reg.1.displayName")),
    "grandstream": (("config/P34", None), ("config/P3", None)),
}


@pytest.mark.parametrize("vendor", sorted(XML_FIELDS))
def test_xml_vendors_carry_every_character_exactly(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path, vendor: str,
) -> None:
    name = 'Bob </user_realname><user_pass idx="2">evil</user_pass> & "co" <x y="z">'
    body, _sub = fetch(settings, conn, new_subscriber, tmp_path, vendor, name)

    root = ET.fromstring(body)  # noqa: S314 - our own output under test: well-formed

    for (path, attribute), expected in zip(XML_FIELDS[vendor], (PASSWORD, name), strict=True):
        [element] = root.findall(path)
        value = element.get(attribute) if attribute else element.text
        # An attribute value's line breaks and tabs were written as character references.
        assert value == expected, (vendor, path, value)
    assert "evil</user_pass>" not in body


def test_fanvil_values_cannot_start_a_new_key(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    body, sub = fetch(settings, conn, new_subscriber, tmp_path, "fanvil",
                      "<<END OF FILE>>\r\nSIP1 Register Pswd      :evil")
    lines = body.split("\r\n")

    assert lines[0].startswith("<<VOIP CONFIG FILE>>") and lines[-2] == "<<END OF FILE>>"
    assert [ln for ln in lines if ln.startswith("SIP1 Register Pswd")] == \
        ["SIP1 Register Pswd      :p<a&s>s\"w'o rd  end"]
    assert [ln for ln in lines if ln == "<<END OF FILE>>"] == ["<<END OF FILE>>"]
    assert f"SIP1 Register User      :{sub.username}" in lines


def test_panasonic_values_stay_on_their_quoted_line(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    body, sub = fetch(settings, conn, new_subscriber, tmp_path, "panasonic",
                      NAME_INJECTING_LINES)

    assert body.endswith("\r\n\r\n")
    lines = body[:-4].split("\r\n")
    assert lines[0] == "# Panasonic SIP Phone Standard Format File # DO NOT CHANGE THIS LINE!"
    assert all(re.match(r'^[A-Z0-9_]+=".*"$', line) for line in lines[1:]), lines
    # A value runs from NAME=" to the line's last quote.
    values = {line.split("=", 1)[0]: line.split("=", 1)[1][1:-1] for line in lines[1:]}
    assert values["SIP_PASS_1"] == "p<a&s>s\"w'o rd  end"
    assert values["SIP_AUTHID_1"] == sub.username
    assert [line for line in lines if line.startswith("SIP_PASS_1=")] == \
        ['SIP_PASS_1="p<a&s>s"w\'o rd  end"']
    assert values["DISPLAY_NAME_1"].startswith("Bob ")


def test_altered_values_are_reported_without_the_value(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    fetch(settings, conn, new_subscriber, tmp_path, "yealink", "Bob")

    log = provisioning.wait_for_log("the password holds characters a yealink config cannot")
    assert "p<a&s>s" not in log


def test_every_line_break_or_control_character_is_caught_and_nothing_else() -> None:
    """The line-based formats' escape is one regex; it must match Unicode's own categories
    (Cc, Zl, Zp) exactly, over every code point."""
    expected = {c for c in range(sys.maxunicode + 1)
                if unicodedata.category(chr(c)) in ("Cc", "Zl", "Zp")}
    caught = {c for c in range(sys.maxunicode + 1) if LINE_BREAK_OR_CONTROL.match(chr(c))}
    assert caught == expected
    assert single_line("a\r\nb\u2028c\x85d\te") == "a  b c d e"
    assert single_line(7) == "7"


def test_printable_text_is_left_to_the_cheap_path_only_when_nothing_in_it_is_replaced() -> None:
    """Both escapes skip their replacing pass for text Python calls printable: that is only
    right while every character they replace is unprintable."""
    replaced = [c for c in map(chr, range(sys.maxunicode + 1))
                if LINE_BREAK_OR_CONTROL.match(c) or _NOT_XML_CHAR.match(c)]
    assert replaced and not any(c.isprintable() for c in replaced)
    # Unprintable yet kept (a no-break space) beside what is replaced (a non-character).
    assert cisco.VENDOR.escape("a\u00a0b\ufffec<d>") == "a\u00a0b c&lt;d&gt;"
    assert single_line("a\u00a0b\x00c") == "a\u00a0b c"
