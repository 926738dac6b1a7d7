"""Registrations that need no database: verified credentials cached, bindings kept through outages.

- A phone's HA1 (never its password), once the database verified it, is kept in shared memory
  (htable `ha1cache`, never written to disk) for `sip_auth_cache_s`: its refreshes cost no
  query, and it keeps registering while PostgreSQL is away. SQL that changes or deletes a
  subscriber NOTIFYs `autoprov_credentials` (sql/010_credential_cache.sql), and the timer drops
  the entry; after a lost LISTEN connection (missed notifications) it drops them all.
- While the database is away (`down`), bindings are saved in memory only and their AORs noted
  in `ul_unsynced`; once it answers again the timer writes those bindings to `location`.
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
UNSYNCED_TABLE = "ul_unsynced"  # AORs saved in memory only, to write to `location`
CHANNEL = "autoprov_credentials"
# auth_db load_credentials puts the verified password here (kamailio.cfg).
PASSWORD_AVP = "$avp(autoprov_pw)"  # noqa: S105 (a variable name, not a password)
PROBE_EVERY_S = 0.5  # how often the timer asks whether the database is back
SYNC_EVERY_S = 1.0
AUTH_OK = 1

_settings = config.load()
_CACHE_S = _settings.sip_auth_cache_s
RETRY_AFTER_S = _settings.sip_db_retry_after_s

_last_probe = 0.0
_last_sync = 0.0


def _key(user: str, realm: str) -> str:
    return f"{user}@{realm}"


def check_cached(realm: str) -> int | None:
    """auth_check's result against the cached HA1; None when nothing is cached for this user
    (or the request carries no credentials)."""
    user = pv("$au")
    if not user:
        return None
    ha1 = KSR.htable.sht_get(CACHE_TABLE, _key(user, realm))
    if not ha1:
        return None
    # Flag 1: the password given is HA1; check 1: the credentials' user is the To user.
    return int(KSR.auth.pv_auth_check(realm, str(ha1), 1, 1))


def remember(realm: str) -> None:
    """Cache the HA1 of credentials auth_db has just verified against `subscriber`."""
    password = pv(PASSWORD_AVP)
    user = pv("$au")
    if not password or not user:
        return
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()  # noqa: S324 (digest)
    KSR.htable.sht_sets(CACHE_TABLE, _key(user, realm), ha1)
    KSR.htable.sht_setex(CACHE_TABLE, _key(user, realm), _CACHE_S)


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


def save_in_memory(aor: str) -> int:
    """Save the REGISTER's bindings in memory only (registrar flag 1), to write back later."""
    result = int(KSR.registrar.save("location", 1))
    if result > 0:
        KSR.htable.sht_seti(UNSYNCED_TABLE, aor, 1)
    return result


def tick() -> None:
    """In the timer process: cache invalidations, outage end, bindings written back."""
    global _last_probe, _last_sync
    payloads = db.notifications(CHANNEL)
    if payloads is None or "*" in payloads:
        KSR.htable.sht_reset(CACHE_TABLE)  # notifications may have been missed: trust none
    else:
        for key in payloads:
            KSR.htable.sht_rm(CACHE_TABLE, key)
    now = time.monotonic()
    if database_down():
        if now - _last_probe < PROBE_EVERY_S:
            return
        _last_probe = now
        try:
            db.query("SELECT 1")
        except psycopg.Error:
            return
        _last_sync = 0.0  # back: write the bindings right now
    if now - _last_sync < SYNC_EVERY_S:
        return
    _last_sync = now
    try:
        _write_back()
    except psycopg.Error:
        return  # stays noted; the next round retries
    if database_down():
        KSR.htable.sht_rm(STATE_TABLE, "db_down")
        KSR.warn("autoprov database reachable again: bindings saved meanwhile written back\n")


_UPSERT = """
INSERT INTO location (ruid, username, domain, contact, received, path, expires, q, callid, cseq,
                      last_modified, flags, cflags, user_agent, socket, methods, instance,
                      reg_id, server_id, connection_id)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
                     %s::timestamp[], %s::real[], %s::text[], %s::int[], %s::timestamp[],
                     %s::int[], %s::int[], %s::text[], %s::text[], %s::int[], %s::text[],
                     %s::int[], %s::int[], %s::int[])
ON CONFLICT (ruid) DO UPDATE SET
    contact = excluded.contact, received = excluded.received, path = excluded.path,
    expires = excluded.expires, q = excluded.q, callid = excluded.callid, cseq = excluded.cseq,
    last_modified = excluded.last_modified, flags = excluded.flags, cflags = excluded.cflags,
    user_agent = excluded.user_agent, socket = excluded.socket, methods = excluded.methods,
    instance = excluded.instance, reg_id = excluded.reg_id, server_id = excluded.server_id,
    connection_id = excluded.connection_id
"""
_FIELDS = ("ruid", "addr", "received", "path", "expires", "q", "callid", "cseq", "modified",
           "flags", "cflags", "user_agent", "socket", "methods", "instance", "regid",
           "server_id", "conid")


def _none_if_empty(value: str) -> str | None:
    return value or None


def _write_back() -> None:
    """Write the bindings of the AORs saved in memory only to `location`, in one statement."""
    aors: list[str] = []
    if KSR.htable.sht_iterator_start("un", UNSYNCED_TABLE) < 0:
        return
    while KSR.htable.sht_iterator_next("un") > 0:
        aors.append(pv("$shtitkey(un)"))
    KSR.htable.sht_iterator_end("un")
    if not aors:
        return
    rows: list[tuple[object, ...]] = []
    for aor in aors:
        user, _, domain = aor.partition("@")
        if KSR.registrar.reg_fetch_contacts("location", f"sip:{aor}", "ws") < 0:
            continue  # no binding left (expired or removed): nothing to write
        for index in range(int(pv("$ulc(ws=>count)") or 0)):
            c = {f: pv(f"$(ulc(ws=>{f})[{index}])") for f in _FIELDS}
            rows.append((
                c["ruid"], user, domain, c["addr"], _none_if_empty(c["received"]),
                _none_if_empty(c["path"]), _local(c["expires"]), _q(c["q"]), c["callid"],
                int(c["cseq"] or 0),
                _local(c["modified"]), int(c["flags"] or 0), int(c["cflags"] or 0),
                c["user_agent"], _none_if_empty(c["socket"]),
                _methods(c["methods"]), _none_if_empty(c["instance"]),
                int(c["regid"] or 0), int(c["server_id"] or 0), int(c["conid"] or 0)))
        KSR.registrar.reg_free_contacts("ws")
    if rows:
        db.query(_UPSERT, tuple(list(column) for column in zip(*rows, strict=True)))
    for aor in aors:
        KSR.htable.sht_rm(UNSYNCED_TABLE, aor)


def _q(value: str) -> float:
    """usrloc's q is thousandths, -1 when the phone gave none (written as -1, as usrloc does)."""
    q = int(value or -1)
    return -1.0 if q < 0 else q / 1000


def _methods(value: str) -> int | None:
    """All methods (0xFFFFFFFF) is NULL in `location`, as usrloc writes it."""
    methods = int(value or 0xFFFFFFFF)
    return None if methods == 0xFFFFFFFF else methods


def _local(epoch: str) -> str:
    """usrloc writes `location` times as local time without zone; so do we."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(epoch or 0)))
