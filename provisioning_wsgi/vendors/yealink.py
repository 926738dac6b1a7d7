"""Yealink: `key = value` text after a `#!version:1.0.0.1` header; common file, then MAC file."""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.x509.oid import NameOID

from provisioning_wsgi.vendors.base import (
    FileKind,
    Vendor,
    lf_lines,
    mac_pattern,
    no_line_breaks,
    single_line,
)

# The XX of y0000000000XX.cfg: the first field of the firmware version, per model.
FAMILIES = {
    "T19P_E2": 53, "T21P_E2": 52, "T23P": 44, "T23G": 44, "T27P": 45, "T27G": 69, "T29G": 46,
    "T40P": 54, "T40G": 76, "T41P": 36, "T42G": 29, "T46G": 28, "T48G": 35, "T49G": 51,
    "T41S": 66, "T42S": 66, "T46S": 66, "T48S": 66, "T52S": 70, "T54S": 70, "T56A": 58,
    "T58V": 58, "T53": 96, "T53W": 96, "T54W": 96, "T57W": 96, "T41U": 108, "T42U": 108,
    "T43U": 108, "T44U": 108, "T44W": 108, "T46U": 108, "T48U": 108, "T30": 124, "T30P": 124,
    "T31": 124, "T31G": 124, "T31P": 124, "T33P": 124, "T33G": 124, "W52P": 25, "CP920": 78,
    "CP960": 73,
}


def files_for(model: str, mac: str) -> list[str]:
    family = FAMILIES.get(model.upper().removeprefix("SIP-"))
    common = [f"y{family:012d}.cfg"] if family is not None else []
    return [*common, f"{mac}.cfg"]


def client_subject(mac: str) -> x509.Name:
    """As in a Yealink device certificate: the MAC ends the serialNumber."""
    attr = x509.NameAttribute
    return x509.Name([
        attr(NameOID.COUNTRY_NAME, "CN"),
        attr(NameOID.STATE_OR_PROVINCE_NAME, "FuJian"),
        attr(NameOID.LOCALITY_NAME, "Xiamen"),
        attr(NameOID.ORGANIZATION_NAME, "Yealink Network Technology Co., Ltd."),
        attr(NameOID.ORGANIZATIONAL_UNIT_NAME, "Yealink Equipment"),
        attr(NameOID.COMMON_NAME, "yealink.com"),
        attr(NameOID.SERIAL_NUMBER, f"ffffffff-ffff-ffff-fff0-{mac}"),
    ])


VENDOR = Vendor(
    name="yealink",
    content_type="text/plain; charset=utf-8",
    files=(
        FileKind(mac_pattern("", r"\.cfg"), "MAC.cfg"),
        FileKind(re.compile(r"^y(?P<model>[0-9]{12})\.cfg$"), "y0000000000XX.cfg"),
    ),
    escape=single_line,
    representable=no_line_breaks,
    finish=lf_lines,
    line_slots=16,
    files_for=files_for,
    client_subject=client_subject,
    user_agent=re.compile(r"Yealink\s+(?:SIP[- ])?(?P<model>[A-Za-z0-9_]+)\s+"
                          r"(?P<firmware>[0-9][0-9.]+)"),
)
