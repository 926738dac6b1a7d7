"""Poly (Polycom) VVX: XML whose parameters are attributes; `device.*` ones count only with
`device.set="1"` and `<name>.set="1"`.

The phone asks for its master file `<mac>.cfg` (else `000000000000.cfg`), which lists the files
to read next (CONFIG_FILES): here `<mac>-autoprov.cfg`, its own configuration. On the plain port
that file only points the phone at the TLS port; there it holds the lines.
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


def finish(text: str) -> bytes:
    return ("\n".join(lines_of(text)) + "\n").encode()


def files_for(model: str, mac: str) -> list[str]:
    return [f"{mac}.cfg", "000000000000.cfg", f"{mac}-autoprov.cfg"]


def client_subject(mac: str) -> x509.Name:
    """As in Poly's factory device certificates (Polycom Equipment Issuing CA, under "Polycom
    Root CA"): the MAC, upper case, is the common name."""
    attr = x509.NameAttribute
    return x509.Name([
        attr(NameOID.ORGANIZATION_NAME, "Polycom Inc."),
        attr(NameOID.COMMON_NAME, mac.upper()),
    ])


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
    finish=finish,
    line_slots=12,
    files_for=files_for,
    client_subject=client_subject,
)
