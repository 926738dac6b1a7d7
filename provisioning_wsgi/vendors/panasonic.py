"""Panasonic KX-UT/TGP/HDV: `NAME="value"` lines after a fixed first line, CRLF, final empty line.

The format has no escape for a double quote inside a value; a value is written as it is between
the quotes (a line ends at its last quote), and nothing in a value can break the line.
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.x509.oid import NameOID

from provisioning_wsgi.vendors.base import (
    FileKind,
    Vendor,
    lines_of,
    mac_pattern,
    no_line_breaks,
    single_line,
)

_MODEL = r"(?P<model>KX-[A-Za-z0-9]+)"


def finish(text: str) -> bytes:
    # "Configuration files must end with an empty line"; the phone ignores empty lines.
    return ("\r\n".join(lines_of(text)) + "\r\n\r\n").encode()


def files_for(model: str, mac: str) -> list[str]:
    """Pre-provisioning {MODEL}.cfg, then standard (per device), product and master files."""
    return [f"{model}.cfg", f"Config{mac.upper()}.cfg", f"Config{model}.cfg", "ConfigCommon.cfg"]


def client_subject(mac: str) -> x509.Name:
    # Panasonic's device certificate layout is not documented anywhere we could find.
    attr = x509.NameAttribute
    return x509.Name([
        attr(NameOID.COUNTRY_NAME, "JP"),
        attr(NameOID.ORGANIZATION_NAME, "Panasonic Corporation"),
        attr(NameOID.ORGANIZATIONAL_UNIT_NAME, "SIP Phone"),
        attr(NameOID.COMMON_NAME, mac.upper()),
    ])


VENDOR = Vendor(
    name="panasonic",
    content_type="text/plain; charset=utf-8",
    files=(
        FileKind(mac_pattern("Config", r"\.cfg"), "ConfigMAC.cfg"),
        FileKind(re.compile(rf"^Config{_MODEL}\.cfg$"), "ConfigMODEL.cfg"),
        FileKind(re.compile(r"^ConfigCommon\.cfg$"), "ConfigCommon.cfg"),
        FileKind(re.compile(rf"^{_MODEL}\.cfg$"), "MODEL.cfg"),
    ),
    escape=single_line,
    representable=no_line_breaks,
    finish=finish,
    line_slots=6,
    files_for=files_for,
    client_subject=client_subject,
    user_agent=re.compile(r"Panasonic_(?P<model>KX-[A-Za-z0-9]+)/(?P<firmware>[0-9][0-9A-Za-z.]*)"),
)
