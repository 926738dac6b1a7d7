"""MAC addresses in every spelling phones and people use, stored as 12 lower-case hex digits."""

from __future__ import annotations

import re

_SPELLINGS = re.compile(
    r"""^(?:
        [0-9a-f]{12}                                   # 001565aabbcc
      | [0-9a-f]{2}(?::[0-9a-f]{2}){5}                 # 00:15:65:aa:bb:cc
      | [0-9a-f]{2}(?:-[0-9a-f]{2}){5}                 # 00-15-65-aa-bb-cc
      | [0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}          # 0015.65aa.bbcc
    )$""",
    re.IGNORECASE | re.VERBOSE,
)


class InvalidMacError(ValueError):
    """Not a MAC address in any accepted spelling."""


def normalize(value: str) -> str:
    """Return the stored form of ``value`` or raise :class:`InvalidMacError`."""
    text = value.strip(" \t\r\n")
    if not _SPELLINGS.match(text):
        raise InvalidMacError(
            f"invalid MAC address {value!r}: expected 12 hex digits, e.g. 00:15:65:aa:bb:cc, "
            "00-15-65-aa-bb-cc, 0015.65aa.bbcc or 001565aabbcc"
        )
    return re.sub(r"[^0-9a-f]", "", text.lower())


def colon_form(mac: str) -> str:
    """00:15:65:aa:bb:cc, for people."""
    m = normalize(mac)
    return ":".join(m[i : i + 2] for i in range(0, 12, 2))
