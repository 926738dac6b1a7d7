"""The Contacts of a REGISTER as we accept them: well-formed sip:/sips: URIs, where a `received`
contact parameter is never the client's to give (registrar would store it, and our NOTIFYs would
go wherever a client pointed them)."""

from __future__ import annotations

import re

# RFC 3261's SIP-URI, loosely on the user part, strictly on scheme, host and port.
_URI = re.compile(
    r"sips?:(?:[^\s@<>\[\]]+@)?"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::[0-9]{1,5})?(?:;[^\s<>?]*)?(?:\?[^\s<>]*)?",
    re.IGNORECASE,
)
_RECEIVED = re.compile(r"(?:^|;)\s*received\s*(?:=|;|$)", re.IGNORECASE)


class BadContactError(ValueError):
    pass


def _split(value: str) -> list[str]:
    """Split a Contact value at its commas, but not inside quotes or <...>."""
    parts, start, quoted, angle, escaped = [], 0, False, False, False
    for i, c in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            escaped, quoted = c == "\\", c != '"'
        elif c == '"':
            quoted = True
        elif c in "<>":
            angle = c == "<"
        elif c == "," and not angle:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return [p.strip() for p in parts]


def _quoted_end(text: str) -> int:
    """Where the quoted string `text` starts with ends."""
    escaped = False
    for i, c in enumerate(text[1:], 1):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            return i + 1
    raise BadContactError(text)


def _uri_and_params(contact: str) -> tuple[str, str]:
    if "<" not in contact:  # addr-spec: its ;parameters are the contact's, not the URI's
        uri, _, params = contact.partition(";")
        return uri.strip(), params
    # name-addr: a display name (maybe quoted) before <uri>, parameters after it.
    name_end = _quoted_end(contact) if contact.startswith('"') else 0
    before, _, rest = contact[name_end:].partition("<")
    if not rest or '"' in before:
        raise BadContactError(contact)
    uri, closed, params = rest.partition(">")
    if not closed:
        raise BadContactError(contact)
    return uri.strip(), params


def check(value: str) -> bool:
    """Raise BadContactError unless every Contact is a SIP URI; True if one carries `received`."""
    if value.strip() == "*":
        return False  # unregister all bindings
    received = False
    for contact in _split(value):
        uri, params = _uri_and_params(contact)
        if not _URI.fullmatch(uri):
            raise BadContactError(contact)
        received = received or _RECEIVED.search(params) is not None
    return received
