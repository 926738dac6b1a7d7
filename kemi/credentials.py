"""Registrations that need no database: verified credentials cached, bindings kept through outages.

- A phone's HA1 (never its password), once the database verified it, is kept in shared memory
  (htable `ha1cache`, never written to disk) for `sip_auth_cache_s`: its refreshes cost no
  query, and it keeps registering while PostgreSQL is away. SQL that changes or deletes a
  subscriber NOTIFYs `autoprov_credentials` (sql/010_credential_cache.sql), and the timer drops
  the entry; after a lost LISTEN connection (missed notifications) it drops them all.
- While the database is away (`database_down`), kemi/bindings.py keeps bindings in memory and
  writes them to `location` once it answers again.
- A phone the cache does not know gets 503 with Retry-After during the outage, not a challenge
  loop.
"""

from __future__ import annotations

import hashlib
import time

import KSR
import psycopg

from autoprov import config
from kemi import db
from kemi.sip import pv

CACHE_TABLE = "ha1cache"
STATE_TABLE = "autoprov_state"  # "db_down": 1 while workers found the database unreachable
CHANNEL = "autoprov_credentials"
# auth_db load_credentials puts the verified password here (kamailio.cfg).
PASSWORD_AVP = "$avp(autoprov_pw)"  # noqa: S105 (a variable name, not a password)
PROBE_EVERY_S = 0.5  # how often the timer asks whether the database is back

_settings = config.load()
_CACHE_S = _settings.sip_auth_cache_s
RETRY_AFTER_S = _settings.sip_db_retry_after_s

_last_probe = 0.0


def _key(user: str, realm: str) -> str:
    return f"{user}@{realm}"


def check_cached(user: str, realm: str) -> int | None:
    """auth_check's result against the cached HA1 of the credentials' user (`$au`); None when
    nothing is cached for this user."""
    ha1 = KSR.htable.sht_get(CACHE_TABLE, _key(user, realm))
    if not ha1:
        return None
    # Flag 1: the password given is HA1; check 1: the credentials' user is the To user.
    return int(KSR.auth.pv_auth_check(realm, str(ha1), 1, 1))


def remember(user: str, realm: str) -> None:
    """Cache the HA1 of credentials auth_db has just verified against `subscriber`."""
    password = pv(PASSWORD_AVP)
    if not password:
        return
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()  # noqa: S324 (digest)
    KSR.htable.sht_setxs(CACHE_TABLE, _key(user, realm), ha1, _CACHE_S)


def database_down() -> bool:
    return bool(KSR.htable.sht_get(STATE_TABLE, "db_down"))


def confirm_database_down() -> bool:
    """After a database error in Kamailio's own modules: is the database really away? If so,
    every worker learns it (no more waiting on it per REGISTER) until the timer sees it back."""
    try:
        db.query("SELECT 1")
        return False
    except psycopg.Error:
        pass
    if KSR.htable.sht_inc(STATE_TABLE, "db_down") == 1:  # only the first worker logs
        KSR.warn("autoprov database unreachable: registering known phones from memory\n")
    return True


def tick() -> None:
    """In the timer process: cache invalidations, and whether the database is back."""
    global _last_probe
    payloads = db.notifications(CHANNEL)
    if payloads is None or "*" in payloads:
        KSR.htable.sht_reset(CACHE_TABLE)  # notifications may have been missed: trust none
    else:
        for key in payloads:
            KSR.htable.sht_rm(CACHE_TABLE, key)
    if not database_down():
        return
    now = time.monotonic()
    if now - _last_probe < PROBE_EVERY_S:
        return
    _last_probe = now
    try:
        db.query("SELECT 1")
    except psycopg.Error:
        return
    KSR.htable.sht_rm(STATE_TABLE, "db_down")
    KSR.warn("autoprov database reachable again: bindings saved meanwhile follow within a second\n")
