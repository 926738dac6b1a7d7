"""Phones that ask for a device file nobody created: noted in memory per MAC (count, first and
last time, what its User-Agent says) and written in one statement at most once a second
(sql/016_unknown_devices.sql bounds what the database keeps). Nothing is ever created: an
operator adopts a phone (`autoprov device unknown`, the operators' page).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psycopg

from autoprov import config_fetch
from provisioning_wsgi import store, vendors

WRITE_EVERY_S = 1.0
# New MACs kept between two writes, and per client address: a scan costs us this much memory.
MAX_PENDING = 2000
PER_ADDRESS = 100
_NOTE = ("SELECT autoprov.note_unknown_devices(%s::text[], %s::text[], %s::text[], %s::text[],"
         " %s::text[], %s::text[], %s::bigint[], %s::float8[], %s::float8[], %s)")


@dataclass
class Seen:
    vendor: str
    user_agent: str | None
    address: str | None
    first: float
    last: float
    count: int = 1


def model_and_firmware(vendor: str, user_agent: str | None) -> tuple[str | None, str | None]:
    """What the vendor's User-Agent says of the phone (its Vendor.user_agent pattern)."""
    module = vendors.VENDORS.get(vendor)
    pattern = module.user_agent if module is not None else None
    match = pattern.search(user_agent) if pattern is not None and user_agent else None
    if match is None:
        return None, None
    return match.group("model"), match.group("firmware")


class UnknownPhones:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, Seen] = {}
        self._per_address: dict[str | None, int] = {}
        self._written = 0.0

    def note(self, vendor: str, mac: str, user_agent: str | None, address: str | None) -> None:
        now = time.time()
        with self._lock:
            seen = self._seen.get(mac)
            if seen is not None:
                seen.count += 1
                seen.last = now
                seen.user_agent, seen.address = user_agent or seen.user_agent, address
                return
            if len(self._seen) >= MAX_PENDING or \
                    self._per_address.get(address, 0) >= PER_ADDRESS:
                return  # a scan: the database would not keep more of it either
            self._per_address[address] = self._per_address.get(address, 0) + 1
            self._seen[mac] = Seen(vendor, user_agent, address, now, now)

    def pending(self) -> bool:
        return bool(self._seen)

    def due(self) -> bool:
        return bool(self._seen) and time.monotonic() - self._written >= WRITE_EVERY_S

    def write(self, db: store.Store) -> bool:
        """One statement for everything noted; False (and the notes kept) if it failed."""
        with self._lock:
            seen, self._seen, self._per_address = self._seen, {}, {}
        self._written = time.monotonic()
        if not seen:
            return True
        macs = list(seen)
        found = [model_and_firmware(s.vendor, s.user_agent) for s in seen.values()]
        rows = list(seen.values())
        params = (macs, [s.vendor for s in rows], [f[0] for f in found], [f[1] for f in found],
                  [config_fetch.user_agent_text(s.user_agent) for s in rows],
                  [config_fetch.client_address(s.address) for s in rows],
                  [s.count for s in rows], [s.first for s in rows], [s.last for s in rows],
                  PER_ADDRESS)
        try:
            db.run(lambda conn: conn.execute(_NOTE, params), transaction=False)
        except (store.DatabaseUnavailableError, psycopg.Error):  # kept for the next try
            with self._lock:
                for mac, old in seen.items():
                    self._seen.setdefault(mac, old)
            return False
        return True
