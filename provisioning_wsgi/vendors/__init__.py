"""What differs per vendor, one module each: file names, format rules, certificate style.

Everything a phone sees beyond that is in the vendor's templates.
"""

from __future__ import annotations

import functools
import re

from provisioning_wsgi.vendors import cisco, fanvil, grandstream, panasonic, polycom, snom, yealink
from provisioning_wsgi.vendors.base import Requested, Vendor

# Order matters only for device file names several vendors share (parse: the first one's).
VENDORS: dict[str, Vendor] = {v.name: v for v in (
    cisco.VENDOR, panasonic.VENDOR, yealink.VENDOR, snom.VENDOR, polycom.VENDOR,
    grandstream.VENDOR, fanvil.VENDOR)}


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
    """Which vendor's file this is, and for which MAC; None for a name no phone asks for.

    Common files (fixed names, no MAC) are matched before device files: Poly's
    000000000000.cfg is a common file, not the device file of MAC 000000000000. Several vendors
    ask for the same device file name (<mac>.cfg: Yealink, Fanvil, Poly): this answers the first
    vendor's; parse_as() gives another's once the device's own vendor is known.
    """
    if not SAFE_FILE.match(file):
        return None
    for with_mac in (False, True):
        for vendor in VENDORS.values():
            found = _match(vendor, file, with_mac)
            if found is not None:
                return found
    return None


def parse_as(vendor: Vendor, file: str) -> Requested | None:
    """The file as this vendor's phone asks for it (a device file name vendors share)."""
    if not SAFE_FILE.match(file):
        return None
    return _match(vendor, file, True) or _match(vendor, file, False)


def _match(vendor: Vendor, file: str, with_mac: bool) -> Requested | None:
    for kind in vendor.files:
        if ("mac" in kind.pattern.groupindex) != with_mac:
            continue
        match = kind.pattern.match(file)
        if match:
            groups = match.groupdict()
            mac = groups.get("mac")
            return Requested(vendor, file, kind.template, mac.lower() if mac else None,
                             groups.get("model"))
    return None
