"""Small helpers over KSR shared by the routes."""

from __future__ import annotations

import KSR


def pv(name: str) -> str:
    """A pseudo-variable as text ('' when unset), e.g. pv("$si")."""
    value = KSR.pv.get(name)
    return "" if value is None else str(value)


def reply(code: int, reason: str, *headers: str) -> None:
    for header in headers:
        KSR.hdr.append_to_reply(header + "\r\n")
    KSR.sl.sl_send_reply(code, reason)


def source() -> str:
    """Where the request came from, as the fail2ban filters expect it: ip:port/proto."""
    return f"{pv('$si')}:{pv('$sp')}/{pv('$pr')}"
