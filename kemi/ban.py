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


def banned(address: str) -> bool:
    return KSR.htable.sht_get(BANNED_TABLE, address) is not None


def auth_failed(address: str) -> None:
    """Count a refused authentication; the one that reaches the limit bans the address."""
    count = KSR.htable.sht_inc(FAILURES_TABLE, address)
    # Each failure restarts the window: N failures, none more than M seconds after the last.
    KSR.htable.sht_setex(FAILURES_TABLE, address, _WINDOW_S)
    if count < _LIMIT:
        return
    KSR.htable.sht_rm(FAILURES_TABLE, address)
    KSR.htable.sht_seti(BANNED_TABLE, address, 1)
    KSR.htable.sht_setex(BANNED_TABLE, address, _BAN_S)
    # Once per ban (a banned address is not answered, so never counted again until it expires).
    KSR.warn(f"autoprov banned from={address} failures={count} window_s={_WINDOW_S} "
             f"ban_s={_BAN_S}\n")
