"""Fanvil X series: the text "VOIP CONFIG FILE", `Key :value` lines in `<MODULE>` sections,
ended by `<<END OF FILE>>`.

The phone asks for `<mac>.cfg` (`$mac` in its Flash File Name), a name Yealink phones ask for too
(vendors.parse_as: the device's vendor decides). A value runs to the end of its line: nothing in it
may break the line or start with `<<`, which the phone could take for a marker.
"""

from __future__ import annotations

import re

from provisioning_wsgi.vendors.base import (
    FileKind,
    Vendor,
    lines_of,
    mac_common_name,
    mac_pattern,
    no_line_breaks,
    single_line,
)


def escape(value: object) -> str:
    text = single_line(value)
    return text if not text.lstrip().startswith("<<") else text.replace("<", " ", 2)


def representable(value: str) -> bool:
    return no_line_breaks(value) and not value.lstrip().startswith("<<")


def finish(text: str) -> bytes:
    return ("\r\n".join(lines_of(text)) + "\r\n").encode()


def files_for(model: str, mac: str) -> list[str]:
    return [f"{mac}.cfg"]


VENDOR = Vendor(
    name="fanvil",
    content_type="text/plain; charset=utf-8",
    files=(FileKind(mac_pattern("", r"\.cfg"), "MAC.cfg"),),
    escape=escape,
    representable=representable,
    finish=finish,
    line_slots=6,
    files_for=files_for,
    # Not publicly documented (docs/vendors.md): as its peers' certificates.
    client_subject=mac_common_name("Fanvil Technology Co., Ltd."),
    user_agent=re.compile(r"^Fanvil (?P<model>[A-Za-z0-9]+(?:[ -][A-Za-z]+)?) "
                          r"(?P<firmware>[0-9][0-9.]+) "),
)
