"""What differs per vendor, one module each: file names, format rules, certificate style.

Everything a phone sees beyond that is in the vendor's templates.
"""

from __future__ import annotations

import functools
import re

from provisioning_wsgi.vendors import cisco, panasonic, yealink
from provisioning_wsgi.vendors.base import Requested, Vendor

VENDORS: dict[str, Vendor] = {v.name: v for v in (cisco.VENDOR, panasonic.VENDOR, yealink.VENDOR)}


class UnknownVendorError(ValueError):
    """A vendor name this system has no module for."""


def get(name: str) -> Vendor:
    try:
        return VENDORS[name]
    except KeyError:
        raise UnknownVendorError(
            f"unknown vendor {name!r}: expected {', '.join(sorted(VENDORS))}") from None


# Everything a phone asks for fits this; anything else is refused before any parsing.
SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# Which file is which is asked on every fetch, of the same few names per phone: the answers are
# kept (a name maps to the same answer as long as the vendor modules are the same). Bounded,
# since anyone can ask for names.
@functools.lru_cache(maxsize=65536)
def parse(file: str) -> Requested | None:
    """Which vendor's file this is, and for which MAC; None for a name no phone asks for."""
    if not SAFE_FILE.match(file):
        return None
    for vendor in VENDORS.values():
        for kind in vendor.files:
            match = kind.pattern.match(file)
            if match:
                groups = match.groupdict()
                mac = groups.get("mac")
                return Requested(vendor, file, kind.template, mac.lower() if mac else None,
                                 groups.get("model"))
    return None
