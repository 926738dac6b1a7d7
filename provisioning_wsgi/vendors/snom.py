"""Snom D7xx/D8xx: XML `<settings><phone-settings>`, one element per setting, `idx` per identity.

The phone fetches the URL of its `setting_server`, with `{mac}` replaced by its MAC (upper case):
a factory phone pointed at the plain port asks for `snom<MODEL>.htm`; the bootstrap then sets
`setting_server` to its own file on the TLS port, `snom<MODEL>-{mac}.htm`. SRAPS hands a phone
`snom-{mac}.htm` on the plain port (autoprov/redirect/snom.py): the model is the device's.
"""

from __future__ import annotations

import re

from provisioning_wsgi.vendors.base import (
    FileKind,
    Vendor,
    lf_lines,
    mac_common_name,
    xml_escape,
    xml_representable,
)

# Snom's model names have no hyphen (D785, D865, 715): "snomD785-<MAC>.htm" is never a model file.
_MODEL = r"(?P<model>[A-Za-z0-9]{1,16})"


def files_for(model: str, mac: str) -> list[str]:
    return [f"snom{model}.htm", f"snom{model}-{mac.upper()}.htm"]


VENDOR = Vendor(
    name="snom",
    content_type="application/xml; charset=utf-8",
    files=(
        FileKind(re.compile(r"^snom(?P<model>[A-Za-z0-9_-]{0,24}?)-(?P<mac>[0-9A-Fa-f]{12})\.htm$"),
                 "snomMODEL-MAC.htm"),
        FileKind(re.compile(rf"^snom{_MODEL}\.htm$"), "snomMODEL.htm"),
        # Where firmware_status points when firmware_dir has an image for the model.
        FileKind(re.compile(r"^snom-firmware-(?P<mac>[0-9A-Fa-f]{12})\.xml$"),
                 "snom-firmware-MAC.xml"),
    ),
    escape=xml_escape,
    representable=xml_representable,
    finish=lf_lines,
    line_slots=12,
    files_for=files_for,
    # As Snom's factory certificates (issuer "Snom Phone 1 SHA-256").
    client_subject=mac_common_name("snom technology AG"),
    user_agent=re.compile(r"snom(?P<model>[A-Za-z0-9]+)-SIP\s+(?P<firmware>[0-9][0-9.]+)"),
)
