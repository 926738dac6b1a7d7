"""What every redirect-service adapter offers, and the one result type vendors' answers map to."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from autoprov.config import Settings


class Outcome(enum.StrEnum):
    """The state of a MAC at the vendor after a call, or why the call did not get there."""

    REGISTERED = "registered"
    # Not registered for us: what a successful deregistration leaves behind.
    NOT_FOUND = "not_found"
    INVALID_MAC = "invalid_mac"
    OWNED_BY_OTHER = "owned_by_other"
    INVALID_URL = "invalid_url"
    AUTH_FAILED = "auth_failed"
    # Refused for a reason we cannot classify (an unknown error text, an HTTP 404, ...).
    REJECTED = "rejected"
    # Outage, timeout, HTTP 5xx, garbled answer: the same call may well work later.
    TEMPORARY = "temporary"

    @property
    def temporary(self) -> bool:
        return self is Outcome.TEMPORARY

    @property
    def words(self) -> str:
        return _WORDS[self]


_WORDS = {
    Outcome.REGISTERED: "registered",
    Outcome.NOT_FOUND: "not registered",
    Outcome.INVALID_MAC: "invalid MAC",
    Outcome.OWNED_BY_OTHER: "owned by another account",
    Outcome.INVALID_URL: "invalid URL",
    Outcome.AUTH_FAILED: "authentication failed",
    Outcome.REJECTED: "refused",
    Outcome.TEMPORARY: "temporary failure",
}


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    # The vendor's own words, or what failed on the way; shown to operators.
    message: str = ""


class RedirectService(Protocol):
    """One vendor's redirect service. MACs are given in the stored form (12 lower-case hex);
    no method raises for anything the vendor or the network does: it is in the Result."""

    label: str

    def register(self, mac: str, serial: str = "") -> Result:
        """Point the MAC at us. Success: REGISTERED. ``serial``: the device's serial number
        where one is known (only services that identify a phone by it use it)."""
        ...

    def deregister(self, mac: str) -> Result:
        """Remove our entry for the MAC. Success, also when there was none: NOT_FOUND."""
        ...

    def check(self, mac: str) -> Result:
        """Ask what the vendor has: REGISTERED (for us), NOT_FOUND or OWNED_BY_OTHER."""
        ...


@dataclass(frozen=True)
class ServiceSpec:
    """How to build an adapter; ``name`` is the value of autoprov.vendor.redirect_service."""

    name: str
    label: str
    # The Settings key whose emptiness disables the service.
    endpoint_key: str
    build: Callable[[Settings], RedirectService]

    def enabled(self, settings: Settings) -> bool:
        return bool(getattr(settings, self.endpoint_key))


def upper_hex(mac: str) -> str:
    """001565AABBCC: the form both vendors' examples use."""
    return mac.upper()
