"""Poly (Polycom) VVX: XML whose parameters are attributes; `device.*` ones count only with
`device.set="1"` and `<name>.set="1"`.

The phone asks for its master file `<mac>.cfg` (else `000000000000.cfg`), which lists the files
to read next (CONFIG_FILES): here `<mac>-autoprov.cfg`, its own configuration. On the plain port
that file only points the phone at the TLS port; there it holds the lines.
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


def files_for(model: str, mac: str) -> list[str]:
    return [f"{mac}.cfg", "000000000000.cfg", f"{mac}-autoprov.cfg"]


VENDOR = Vendor(
    name="polycom",
    content_type="application/xml; charset=utf-8",
    files=(
        FileKind(mac_pattern("", r"-autoprov\.cfg"), "MAC-autoprov.cfg"),
        # The device's own master file: a name Yealink and Fanvil phones ask for too
        # (vendors.parse_as: the device's vendor decides).
        FileKind(mac_pattern("", r"\.cfg"), "MAC.cfg"),
        FileKind(re.compile(r"^000000000000\.cfg$"), "000000000000.cfg"),
    ),
    escape=xml_escape,
    representable=xml_representable,
    finish=lf_lines,
    line_slots=12,
    files_for=files_for,
    # As Poly's factory certificates (under "Polycom Root CA").
    client_subject=mac_common_name("Polycom Inc."),
    user_agent=re.compile(r"Polycom[A-Za-z]*-(?P<model>[A-Za-z0-9_]+)-UA/(?P<firmware>[0-9][0-9.]+)"),
)
