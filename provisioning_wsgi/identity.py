"""Does a verified client certificate belong to the phone whose MAC is in the requested file?

Vendors put the MAC in different subject attributes and spellings: Cisco upper-case in ST and
in the CN ("SPA-525G2, MAC: 708105B37234, ..."), Yealink at the end of serialNumber
("ffffffff-ffff-ffff-fff0-001565000062") or as the CN. So every subject attribute value is
searched for MAC-shaped tokens, which are normalised (lower case, no separators) and compared.
A token must stand alone (no hex digit right before or after it), so a longer hex string, such
as a serial number, cannot name a MAC by containing it.

The subject comes from the web front (autoprov/front.py) as the string nginx makes of the verified
certificate's subject ($ssl_client_s_dn, RFC 2253): dn_values takes its attribute values apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# The WSGI environ key under which the TLS adapter hands over the verified certificate's
# subject attribute values (a server extension key, as PEP 3333 allows).
SUBJECT_VALUES = "autoprov.client_subject"

_MAC_TOKEN = re.compile(
    r"(?<![0-9A-Fa-f])"
    r"([0-9A-Fa-f]{12}"
    r"|[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}"
    r"|[0-9A-Fa-f]{2}(?:-[0-9A-Fa-f]{2}){5}"
    r"|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4})"
    r"(?![0-9A-Fa-f])"
)
_NOT_HEX = re.compile(r"[^0-9a-f]")

# ssl's decoded subject: one tuple per RDN, each holding (attribute name, value) pairs.
DecodedSubject = Iterable[Iterable[tuple[str, str]]]


def subject_values(subject: DecodedSubject) -> tuple[str, ...]:
    return tuple(value for rdn in subject for _name, value in rdn)


def dn_values(dn: str) -> tuple[str, ...]:
    """The attribute values of an RFC 2253 distinguished name ("CN=a\\, b,ST=c" -> "a, b", "c").

    Escapes are undone (a backslash before a character, or before two hex digits for a byte of
    UTF-8), so that a value reads as it does in the certificate."""
    values: list[str] = []
    current = bytearray()
    in_value = False
    i = 0
    while i < len(dn):
        char = dn[i]
        if char == "\\" and i + 1 < len(dn):
            pair = dn[i + 1:i + 3]
            if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
                current.append(int(pair, 16))
                i += 3
                continue
            current += dn[i + 1].encode()
            i += 2
            continue
        if char in ",+":
            if in_value:
                values.append(current.decode(errors="replace"))
            current.clear()
            in_value = False
        elif char == "=" and not in_value:
            current.clear()
            in_value = True
        else:
            current += char.encode()
        i += 1
    if in_value:
        values.append(current.decode(errors="replace"))
    return tuple(values)


def macs_in(values: Iterable[str]) -> set[str]:
    # "\n" is no hex digit: joining keeps each value's tokens standing alone.
    return {_NOT_HEX.sub("", token.lower()) for token in _MAC_TOKEN.findall("\n".join(values))}


def subject_names_mac(values: Iterable[str], mac: str) -> bool:
    """True if a subject attribute value names ``mac`` (12 lower-case hex digits)."""
    return mac in macs_in(values)
