"""Cisco SPA: XML "open profile" (<flat-profile>), one element per parameter."""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.x509.oid import NameOID

from provisioning_wsgi.vendors.base import FileKind, Vendor, lines_of, mac_pattern, passthrough

# XML 1.0 Char production: anything else cannot appear in a document, even escaped.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ENTITIES = {
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;",
    # Escaped so a parser's end-of-line and whitespace handling keeps them as they are.
    "\t": "&#9;", "\n": "&#10;", "\r": "&#13;",
}
_SPECIAL = re.compile("[&<>\"'\t\n\r]")


def escape(value: object) -> str:
    done = passthrough(value)
    if done is not None:
        return done
    text = str(value)
    if not text.isprintable():  # what XML cannot carry is all unprintable (controls, U+FFFE...)
        text = _NOT_XML_CHAR.sub(" ", text)
    return _SPECIAL.sub(_entity, text)


def _entity(match: re.Match[str]) -> str:
    return _ENTITIES[match.group(0)]


def representable(value: str) -> bool:
    return not _NOT_XML_CHAR.search(value)


def finish(text: str) -> bytes:
    return ("\n".join(lines_of(text)) + "\n").encode()


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
    escape=escape,
    representable=representable,
    finish=finish,
    line_slots=12,
    files_for=files_for,
    client_subject=client_subject,
    browser_bootstrap=True,
)
