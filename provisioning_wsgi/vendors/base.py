"""The shape of a vendor module, and helpers the formats share."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID
from markupsafe import Markup


@dataclass(frozen=True)
class FileKind:
    """A file name a phone asks for, and the template that answers it.

    Named groups in the pattern: "mac" makes it one device's file (the MAC must be that
    device's, and on the TLS port the client certificate's); "model" goes to the template.
    """

    pattern: re.Pattern[str]
    # The template's file name, under <vendor>/<bootstrap|config>/.
    template: str


@dataclass(frozen=True)
class Vendor:
    name: str
    content_type: str
    files: tuple[FileKind, ...]
    # Jinja2 finalize: every {{ value }} goes through it, so a template cannot forget escaping.
    escape: Callable[[object], str]
    # Whether a value survives escape unchanged in meaning (else the phone gets a mangled one).
    representable: Callable[[str], bool]
    # The rendered text as the bytes to serve (line ends, final newline).
    finish: Callable[[str], bytes]
    # Line slots a full config names; unused ones are written disabled so stale lines go away.
    line_slots: int
    # The files a phone of this model (first argument) and MAC asks for, in its order.
    files_for: Callable[[str, str], list[str]]
    # A client certificate subject in the style of the vendor's factory certificates.
    client_subject: Callable[[str], x509.Name]
    # No redirect service: a browser on the phone's network hands the phone its provisioning
    # URL through the phone's web interface (the operators' bootstrap page). How, per model, is
    # in templates/<vendor>/browser/ (see provisioning_wsgi/browser_push.py).
    browser_bootstrap: bool = False
    # What its phones' User-Agent says: named groups "model" and "firmware" (unknown phones).
    user_agent: re.Pattern[str] | None = None


@dataclass(frozen=True)
class Requested:
    vendor: Vendor
    file: str
    template: str
    mac: str | None
    model: str | None


def passthrough(value: object) -> str | None:
    """What needs no escaping in any format: None prints as nothing, a number (line numbers,
    seconds: most of what a template prints) as its digits, Markup (a template's explicit
    |safe) as it is; else None."""
    if type(value) is int:  # not bool, whose text is a word
        return str(value)
    if value is None:
        return ""
    if isinstance(value, Markup):
        return str(value)
    return None


# Unicode categories Cc (CR, LF, TAB, NUL...; NEL too), Zl and Zp (line breaks to some parsers):
# exactly these 67 code points (tests/test_provisioning_escaping.py checks against unicodedata).
# One regex pass per value: a config renders dozens of values, one per phone per fetch.
LINE_BREAK_OR_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def single_line(value: object) -> str:
    """For line-based formats: no character of a value can end its line and start a key."""
    done = passthrough(value)
    if done is not None:
        return done
    text = str(value)
    # Cc, Zl and Zp are all unprintable: a printable text (the usual one) has nothing to replace.
    return text if text.isprintable() else LINE_BREAK_OR_CONTROL.sub(" ", text)


def no_line_breaks(value: str) -> bool:
    return LINE_BREAK_OR_CONTROL.search(value) is None


def lines_of(text: str) -> list[str]:
    """Template output as lines, whatever line ends the template file used; no trailing blanks."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def lf_lines(text: str) -> bytes:
    """A `finish` for formats read line by line with LF ends: one final newline."""
    return ("\n".join(lines_of(text)) + "\n").encode()


def mac_common_name(organization: str) -> Callable[[str], x509.Name]:
    """A `client_subject` in the style most factory certificates share: the vendor as O and the
    MAC, upper case, as the common name."""
    def subject(mac: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                          x509.NameAttribute(NameOID.COMMON_NAME, mac.upper())])
    return subject


def mac_pattern(prefix: str, suffix: str) -> re.Pattern[str]:
    return re.compile(rf"^{prefix}(?P<mac>[0-9A-Fa-f]{{12}}){suffix}$")


# XML 1.0 Char production: anything else cannot appear in a document, even escaped.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ENTITIES = {
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;",
    # Escaped so a parser's end-of-line and whitespace handling keeps them as they are.
    "\t": "&#9;", "\n": "&#10;", "\r": "&#13;",
}
_XML_SPECIAL = re.compile("[&<>\"'\t\n\r]")


def xml_escape(value: object) -> str:
    """For XML formats, in element text and in attribute values alike."""
    done = passthrough(value)
    if done is not None:
        return done
    text = str(value)
    if not text.isprintable():  # what XML cannot carry is all unprintable (controls, U+FFFE...)
        text = _NOT_XML_CHAR.sub(" ", text)
    return _XML_SPECIAL.sub(_entity, text)


def _entity(match: re.Match[str]) -> str:
    return _ENTITIES[match.group(0)]


def xml_representable(value: str) -> bool:
    return not _NOT_XML_CHAR.search(value)
