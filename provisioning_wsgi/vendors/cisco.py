"""Cisco SPA: XML "open profile" (<flat-profile>), one element per parameter."""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.x509.oid import NameOID

from provisioning_wsgi.vendors.base import (
    FileKind,
    Vendor,
    lf_lines,
    mac_pattern,
    xml_escape,
    xml_representable,
)

_PSN = re.compile(r"^[0-9]{3}[0-9A-Za-z]{0,4}$")


def files_for(model: str, mac: str) -> list[str]:
    """The factory profile rule asks for /spa$PSN.cfg (SPA504G: spa504G.cfg), then $MA.xml."""
    files = [f"{mac}.xml"]
    if model.upper().startswith("SPA") and _PSN.match(model[3:]):
        files.insert(0, f"spa{model[3:]}.cfg")
    return files


def client_subject(mac: str) -> x509.Name:
    """As in Cisco's per-unit certificates: MAC upper-case in ST and in the CN."""
    upper = mac.upper()
    serial = "CBT" + upper[4:]
    attr = x509.NameAttribute
    return x509.Name([
        attr(NameOID.COUNTRY_NAME, "US"),
        attr(NameOID.STATE_OR_PROVINCE_NAME, upper),
        attr(NameOID.LOCALITY_NAME, serial),
        attr(NameOID.ORGANIZATION_NAME, "Cisco Systems, Inc."),
        attr(NameOID.ORGANIZATIONAL_UNIT_NAME, "cisco.com"),
        attr(NameOID.COMMON_NAME, f"SPA-504G, MAC: {upper}, Serial: {serial}"),
        attr(NameOID.EMAIL_ADDRESS, "linksys-certadmin@cisco.com"),
    ])


VENDOR = Vendor(
    name="cisco",
    content_type="text/xml; charset=utf-8",
    files=(
        FileKind(mac_pattern("(?:spa)?", r"\.xml"), "MAC.xml"),
        FileKind(re.compile(r"^spa(?P<model>[0-9]{3}[0-9A-Za-z]{0,4})\.cfg$"), "spaPSN.cfg"),
    ),
    escape=xml_escape,
    representable=xml_representable,
    finish=lf_lines,
    line_slots=12,
    files_for=files_for,
    client_subject=client_subject,
    browser_bootstrap=True,
    user_agent=re.compile(r"Cisco/(?P<model>SPA[0-9A-Za-z]+)-(?P<firmware>[0-9][0-9A-Za-z.()_]*)"),
)
