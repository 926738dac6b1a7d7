"""Does a verified client certificate belong to the phone whose MAC is in the requested file?

Vendors put the MAC in different subject attributes and spellings: Cisco upper-case in ST and
in the CN ("SPA-525G2, MAC: 708105B37234, ..."), Yealink at the end of serialNumber
("ffffffff-ffff-ffff-fff0-001565000062") or as the CN. So every subject attribute value is
searched for MAC-shaped tokens, which are normalised (lower case, no separators) and compared.
A token must stand alone (no hex digit right before or after it), so a longer hex string, such
as a serial number, cannot name a MAC by containing it.
"""

from __future__ import annotations

import functools
import re

from cryptography import x509

_MAC_TOKEN = re.compile(
    r"(?<![0-9A-Fa-f])"
    r"([0-9A-Fa-f]{12}"
    r"|[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}"
    r"|[0-9A-Fa-f]{2}(?:-[0-9A-Fa-f]{2}){5}"
    r"|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4})"
    r"(?![0-9A-Fa-f])"
)


def macs_in_subject(subject: x509.Name) -> set[str]:
    found = set()
    for attribute in subject:
        value = attribute.value
        text = value if isinstance(value, str) else value.decode("latin-1")
        for token in _MAC_TOKEN.findall(text):
            found.add(re.sub(r"[^0-9a-f]", "", token.lower()))
    return found


@functools.lru_cache(maxsize=4096)  # a phone presents the same certificate on every fetch
def certificate_names_mac(pem: str, mac: str) -> bool:
    """True if the PEM certificate's subject names ``mac`` (12 lower-case hex digits)."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False
    return mac in macs_in_subject(cert.subject)
