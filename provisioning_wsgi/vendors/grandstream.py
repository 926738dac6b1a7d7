"""Grandstream GXP/GRP: XML `<gs_provision>` of P-value parameters (config version 1).

The phone asks for `cfg<mac>` (the legacy binary format: not served), then `cfg<mac>.xml`,
then `cfg<model>.xml` and `cfg.xml` (MAC and model in lower case).
"""

from __future__ import annotations

import re

from provisioning_wsgi.vendors.base import (
    FileKind,
    Vendor,
    lf_lines,
    mac_common_name,
    mac_pattern,
    xml_escape,
    xml_representable,
)

# Model file names start with a family (never 12 hex digits: cfg<mac>.xml is the device's).
_MODEL = r"(?P<model>(?:gxp|grp|gxv|gac|wp|ht)[0-9a-z]{1,12})"


def files_for(model: str, mac: str) -> list[str]:
    return [f"cfg{mac}.xml", f"cfg{model.lower()}.xml", "cfg.xml"]


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
    finish=lf_lines,
    # Accounts 1 to 4 have documented P-values (README, docs/vendors.md).
    line_slots=4,
    files_for=files_for,
    # As Grandstream's factory certificates (under "Grandstream Networks Root CA").
    client_subject=mac_common_name("Grandstream Networks, Inc."),
    user_agent=re.compile(r"Grandstream Model HW (?P<model>[A-Za-z0-9]+)\s+SW "
                          r"(?P<firmware>[0-9][0-9.]+)"),
)
