"""Brute force: a source address that keeps failing authentication gets no answer for a while.

Counted and banned in shared memory (htable), per address; nothing here touches the database.
"""

from __future__ import annotations

import KSR

from autoprov import config

FAILURES_TABLE = "auth_failures"
BANNED_TABLE = "ipban"

_settings = config.load()
_LIMIT = _settings.sip_auth_fail_limit
_WINDOW_S = _settings.sip_auth_fail_window_s
_BAN_S = _settings.sip_ban_s


# One lookup with the source address filled in by Kamailio: this runs for every message.
_SOURCE_BANNED = f"$sht({BANNED_TABLE}=>$si)"


def source_banned() -> bool:
    return bool(KSR.pv.get(_SOURCE_BANNED))  # 0 (initval) when not banned


def source_flooding() -> bool:
    """pike says the source address sends too much: ban it like a password guesser."""
    if KSR.pike.pike_check_req() >= 0:
        return False
    _ban(str(KSR.pv.get("$si")), "flood")
    return True


def auth_failed(address: str) -> None:
    """Count a refused authentication; the one that reaches the limit bans the address."""
    count = KSR.htable.sht_inc(FAILURES_TABLE, address)
    # Each failure restarts the window: N failures, none more than M seconds after the last.
    KSR.htable.sht_setex(FAILURES_TABLE, address, _WINDOW_S)
    if count < _LIMIT:
        return
    KSR.htable.sht_rm(FAILURES_TABLE, address)
    _ban(address, f"auth-failures={count}")


def _ban(address: str, reason: str) -> None:
    # Atomic: of workers seeing the same flood at once, only the first bans and logs.
    if KSR.htable.sht_inc(BANNED_TABLE, address) != 1:
        return
    KSR.htable.sht_setex(BANNED_TABLE, address, _BAN_S)
    KSR.warn(f"autoprov banned from={address} reason={reason} ban_s={_BAN_S}\n")
