"""Bindings: what a REGISTER changes, and how it reaches `location`.

usrloc writes through to `location` (kamailio.cfg, db_mode 1). Two kinds of save skip that write
and leave it to the timer process, which writes the bindings of the AORs noted in `ul_unsynced`
once a second, in one statement (and, after a removal, deletes the rows memory no longer has):
- the refresh of a binding we hold already (one Contact, bound before, not a removal): the
  phone's REGISTER costs the database no query (the row is up to a second behind); the worker
  notes the new expiry and received (registrar's xavp_rcd), and the timer writes only those,
  for every refreshed binding in one UPDATE;
- any REGISTER while the database is away (kemi/credentials.py): written when it is back.
A new binding and a removal are written through, so SQL (and a resync dispatched by it) sees a
new phone at once. Rows whose expiry passed leave `location` with usrloc's db_timer_clean.
"""

from __future__ import annotations

import re
import time

import KSR
import psycopg

from autoprov import config
from kemi import credentials, db
from kemi.sip import pv

UNSYNCED_TABLE = "ul_unsynced"  # AORs whose bindings the timer writes to `location`
RECONCILE_TABLE = "ul_reconcile"  # AORs whose rows may outlive their bindings (removals)
REFRESHED_TABLE = "ul_refreshed"  # ruid -> "expires|received" of a binding just refreshed
RECORD_XAVP = "ulrcd"  # registrar's xavp_rcd (kamailio.cfg): the saved bindings' ruid, expires
BOUND_TABLE = "ul_bound"  # "AOR|Contact" saved before: a REGISTER of it is a refresh
BOUND_S = 3700  # registrar max_expires, and a minute
# A refresh renews its `ul_bound` entry only when it is this old: most refreshes then write
# nothing there, and an entry still outlives the last refresh by BOUND_S - BOUND_RENEW_S.
BOUND_RENEW_S = 600
SAVE_NO_REPLY = 2  # registrar: no reply from save(), reg_send_reply() sends it
SAVE_IN_MEMORY = 1  # registrar: memory only (usrloc's FL_MEM), with its reply
SYNC_EVERY_S = 1.0
_REMOVAL = re.compile(r";\s*expires\s*=\s*0+\s*(?:[;>,]|$)", re.IGNORECASE)

_last_sync = 0.0
_SERVER_ID = config.load().sip_server_id


def refresh_key(aor: str, contact: str) -> str | None:
    """The key of the one binding this REGISTER may refresh, or None when it has no Contact,
    several, or `*`. `contact`: the Contact headers joined by commas, as register.py read them."""
    if not contact or "," in contact or contact.strip() == "*":
        return None
    return f"{aor}|{contact}"


def bound(key: str | None) -> int:
    """When this Contact of this AOR was noted as saved here (having passed register's checks),
    in epoch seconds; 0 when it was not."""
    if key is None:
        return 0
    return int(KSR.htable.sht_get(BOUND_TABLE, key) or 0)


def _removal(contact: str) -> bool:
    return _REMOVAL.search(contact) is not None or pv("$hdr(Expires)").strip() == "0"


def save(aor: str, contact: str, key: str | None, known: int) -> bool:
    """Save the REGISTER's bindings and answer it; False when it could not be saved (no reply
    sent). `key`: refresh_key(), None if the Contacts must not be trusted as known next time;
    `known`: bound(key)."""
    if key is not None and _removal(contact):
        key, known = None, 0
    if known and KSR.registrar.save("location", SAVE_IN_MEMORY) > 0:
        _refreshed(aor, str(key), known)
        return True
    if not credentials.database_down() and KSR.registrar.save("location", SAVE_NO_REPLY) > 0:
        KSR.registrar.reg_send_reply()
        if key is not None:
            _bound(key)
        elif contact:
            # A removal, or several contacts: rows a memory-only refresh left behind go too.
            KSR.htable.sht_seti(RECONCILE_TABLE, aor, 1)
        return True
    away = credentials.database_down() or credentials.confirm_database_down()
    return away and _in_memory(aor, key)


def _in_memory(aor: str, key: str | None) -> bool:
    if KSR.registrar.save("location", SAVE_IN_MEMORY) <= 0:
        return False
    KSR.htable.sht_seti(UNSYNCED_TABLE if key is not None else RECONCILE_TABLE, aor, 1)
    if key is not None:
        _bound(key)
    return True


def _refreshed(aor: str, key: str, since: int) -> None:
    """Note what the timer writes for a refresh: the binding's new expiry and received (the rest
    of its row is what it was), from registrar's record of the save, without a lookup. Also
    while the database is away: the timer writes them when it is back, and writes the whole row
    of a binding `location` does not have (it expired meanwhile, or came back under a new ruid)."""
    ruid = KSR.pv.get(f"$xavp({RECORD_XAVP}=>ruid)")
    expires = KSR.pv.get(f"$xavp({RECORD_XAVP}=>expires)")
    received = KSR.pv.get(f"$xavp({RECORD_XAVP}=>received)")
    now = int(time.time())
    KSR.htable.sht_sets(REFRESHED_TABLE, str(ruid),
                        f"{now + int(expires or 0)}|{received or ''}|{aor}")
    if now - since >= BOUND_RENEW_S:
        _bound(key)


def _bound(key: str) -> None:
    KSR.htable.sht_setxi(BOUND_TABLE, key, int(time.time()), BOUND_S)


def tick() -> None:
    """In the timer process: the noted AORs' bindings to `location`, once a second."""
    global _last_sync
    now = time.monotonic()
    if now - _last_sync < SYNC_EVERY_S or credentials.database_down():
        return
    _last_sync = now
    try:
        _write_back()
    except psycopg.Error:
        return  # still noted; the next round retries


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
_DELETE_GONE = """
DELETE FROM location l
 USING unnest(%s::text[], %s::text[]) AS a(username, domain)
 WHERE l.username = a.username AND l.domain = a.domain AND l.server_id = %s
   AND NOT (l.ruid = ANY (%s::text[]))
"""
_FIELDS = ("ruid", "addr", "received", "path", "expires", "q", "callid", "cseq", "modified",
           "flags", "cflags", "user_agent", "socket", "methods", "instance", "regid",
           "server_id", "conid")


def _none_if_empty(value: str) -> str | None:
    return value or None


def _noted(table: str) -> list[str]:
    aors: list[str] = []
    if KSR.htable.sht_iterator_start("un", table) < 0:
        return aors
    while KSR.htable.sht_iterator_next("un") > 0:
        aors.append(pv("$shtitkey(un)"))
    KSR.htable.sht_iterator_end("un")
    return aors


# The noted bindings travel as one text, a line per binding with tab-separated fields (no ruid,
# time or received address holds a tab or a line break): adapting three arrays cost the timer
# process 15 times the CPU. Only the ruids it found no row for come back (normally none).
_UPDATE_REFRESHED = """
WITH noted AS (
    SELECT f[1] AS ruid, f[2]::timestamp AS expires, f[3] AS received
      FROM string_to_table(%s, E'\\n') AS line, string_to_array(line, E'\\t') AS f
), updated AS (
    UPDATE location l SET expires = n.expires, received = NULLIF(n.received, ''),
           last_modified = localtimestamp(0)
      FROM noted n
     WHERE l.ruid = n.ruid
    RETURNING l.ruid
)
SELECT n.ruid FROM noted n WHERE NOT EXISTS (SELECT 1 FROM updated u WHERE u.ruid = n.ruid)
"""
_UNSAFE = str.maketrans("\t\n", "  ")


def _write_refreshed() -> None:
    """One UPDATE for every binding refreshed since the last round (no lookups: the workers
    noted what changed). A refreshed binding whose row is not there has its AOR written whole."""
    if KSR.htable.sht_iterator_start("rf", REFRESHED_TABLE) < 0:
        return
    noted: dict[str, str] = {}
    # sht_iterator_rm moves on to the next item itself (> 0 while there is one): a
    # sht_iterator_next after it would skip that binding until the next round.
    more = KSR.htable.sht_iterator_next("rf") > 0
    while more:
        noted[str(KSR.pv.get("$shtitkey(rf)"))] = str(KSR.pv.get("$shtitval(rf)"))
        more = KSR.htable.sht_iterator_rm("rf") > 0
    KSR.htable.sht_iterator_end("rf")
    if not noted:
        return
    local: dict[str, str] = {}  # most bindings refreshed in one round share their expiry second
    lines = []
    for ruid, value in noted.items():
        until, _, rest = value.partition("|")
        received = rest.partition("|")[0]
        when = local.get(until) or local.setdefault(until, _local(until))
        lines.append(f"{ruid.translate(_UNSAFE)}\t{when}\t{received.translate(_UNSAFE)}")
    try:
        missing = db.query(_UPDATE_REFRESHED, ("\n".join(lines),))
    except psycopg.Error:
        for ruid, value in noted.items():  # as noted, for the next round
            KSR.htable.sht_sets(REFRESHED_TABLE, ruid, value)
        raise
    for (ruid,) in missing:
        aor = noted.get(str(ruid), "").split("|", 2)[-1]
        if aor:
            KSR.htable.sht_seti(UNSYNCED_TABLE, aor, 1)


def _write_back() -> None:
    """Write the bindings of the noted AORs to `location`: one upsert for all of them, and for
    those with a removal one delete of the rows memory no longer has."""
    _write_refreshed()
    refreshed, reconciled = _noted(UNSYNCED_TABLE), _noted(RECONCILE_TABLE)
    if not refreshed and not reconciled:
        return
    rows = _rows(set(refreshed) | set(reconciled))
    if rows:
        db.query(_UPSERT, tuple(list(column) for column in zip(*rows, strict=True)))
    if reconciled:
        users, domains = zip(*(aor.partition("@")[::2] for aor in reconciled), strict=True)
        wanted = set(reconciled)
        kept = [row[0] for row in rows if f"{row[1]}@{row[2]}" in wanted]
        db.query(_DELETE_GONE, (list(users), list(domains), _SERVER_ID, kept))
    for aor in refreshed:
        KSR.htable.sht_rm(UNSYNCED_TABLE, aor)
    for aor in reconciled:
        KSR.htable.sht_rm(RECONCILE_TABLE, aor)


def _rows(aors: set[str]) -> list[tuple[object, ...]]:
    """The `location` rows of the AORs' bindings in memory, as usrloc writes them."""
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
    return rows


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
