"""Grandstream GXP/GRP: XML `<gs_provision>` of P-value parameters (config version 1).

The phone asks for `cfg<mac>` (the legacy binary format: not served), then `cfg<mac>.xml`,
then `cfg<model>.xml` and `cfg.xml` (MAC and model in lower case).
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
    xml_escape,
    xml_representable,
)

# Model file names start with a family (never 12 hex digits: cfg<mac>.xml is the device's).
_MODEL = r"(?P<model>(?:gxp|grp|gxv|gac|wp|ht)[0-9a-z]{1,12})"


def finish(text: str) -> bytes:
    return ("\n".join(lines_of(text)) + "\n").encode()


def files_for(model: str, mac: str) -> list[str]:
    return [f"cfg{mac}.xml", f"cfg{model.lower()}.xml", "cfg.xml"]


def client_subject(mac: str) -> x509.Name:
    """As in Grandstream's factory certificates (under "Grandstream Networks Root CA"): the MAC,
    upper case, is the common name."""
    attr = x509.NameAttribute
    return x509.Name([
        attr(NameOID.ORGANIZATION_NAME, "Grandstream Networks, Inc."),
        attr(NameOID.COMMON_NAME, mac.upper()),
    ])


VENDOR = Vendor(
    name="grandstream",
    content_type="application/xml; charset=utf-8",
    files=(
        FileKind(mac_pattern("cfg", r"\.xml"), "cfgMAC.xml"),
        FileKind(re.compile(rf"^cfg{_MODEL}\.xml$"), "cfgMODEL.xml"),
        FileKind(re.compile(r"^cfg\.xml$"), "cfg.xml"),
    ),
    escape=xml_escape,
    representable=xml_representable,
    finish=finish,
    # Accounts 1 to 4 have documented P-values (README, docs/vendors.md).
    line_slots=4,
    files_for=files_for,
    client_subject=client_subject,
)
