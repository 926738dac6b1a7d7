"""The NOTIFY path: check-sync to every registered contact of a device, outcomes recorded.

Requests and per-contact NOTIFY rows live in Postgres (sql/002_resync.sql); this module only
dispatches, sends and records, so nothing is kept only in a process's memory for long. The
phone's 401/407 is answered here (kemi/digest.py), not by the uac module's own retry.
- tick(): the rtimer process, every 20 ms: records queued replies, and dispatches and sends
  when Postgres NOTIFYs it (or every poll interval).
- after_register(): a REGISTER of an AOR with a pending request sends right after the 200 OK.
- on_uac_event(): a NOTIFY's reply (or timeout), in the worker that got it: a first challenge is
  answered at once, and the reply queued for tick() to record in a batch (a fan-out to thousands
  of phones must not cost each worker a database write per reply).
"""

from __future__ import annotations

import secrets
import time

import KSR
import psycopg

from autoprov import config
from kemi import db, digest
from kemi.sip import pv

CHANNEL = "autoprov_resync"
PENDING_TABLE = "resync_pending"  # AORs whose next REGISTER triggers a NOTIFY
EVENTS_TABLE = "resync_events"  # replies to record: "nid.stage" -> "code:timed_out:after:time"
CHALLENGED_TABLE = "resync_challenged"  # NOTIFYs the phone has challenged once already
CLAIM_BATCH = 500
DISPATCH_BATCH = 500
FIRST_BATCH = 50  # small, so the first phones hear from us at once
LOST_AFTER = "40 seconds"  # a NOTIFY without an answer by then is recorded as no answer

_settings = config.load()
_EVENT_OVERRIDES = dict(
    entry.split("=", 1) for entry in _settings.notify_event_overrides if "=" in entry
)
_SERVER_ID = _settings.sip_server_id
_POLL_SECONDS = _settings.resync_poll_ms / 1000

_last_run = 0.0
_pending_aors: set[str] = set()
_last_db_warning = 0.0
DB_WARNING_EVERY = 10.0  # seconds: one line per outage period, not one per 20 ms tick


def _db_unavailable(where: str, exc: psycopg.Error) -> None:
    global _last_db_warning
    now = time.monotonic()
    if now - _last_db_warning >= DB_WARNING_EVERY:
        _last_db_warning = now
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        KSR.warn(f"autoprov resync database unavailable in {where}: {first_line}\n")


def event_for(vendor_event: str, model: str) -> str:
    return _EVENT_OVERRIDES.get(model, vendor_event)


def send(row: tuple[object, ...], authorization: str = "") -> None:
    """Send one NOTIFY (or, with `authorization`, its answer to the phone's challenge)."""
    nid, aor, contact, received, sock, _vendor, model, event, _username, _password = row
    uri = f"sip:{aor}"
    hdrs = f"Event: {event_for(str(event), str(model))}\r\nSubscription-State: active\r\n"
    KSR.pv.unset("$uac_req(all)")
    KSR.pv.sets("$uac_req(method)", "NOTIFY")
    KSR.pv.sets("$uac_req(ruri)", str(contact))
    if received:  # behind NAT: where the REGISTER really came from
        KSR.pv.sets("$uac_req(ouri)", str(received))
    if sock:
        KSR.pv.sets("$uac_req(sock)", str(sock))
    KSR.pv.sets("$uac_req(furi)", uri)
    KSR.pv.sets("$uac_req(turi)", uri)
    # A fresh Call-ID for the answer to a challenge too: 5.6's uac cannot raise the CSeq, and a
    # same Call-ID/CSeq/From-tag request would be a merged request (482) to a strict phone.
    KSR.pv.sets("$uac_req(callid)", f"resync-{nid}-{secrets.token_hex(6)}@autoprov")
    KSR.pv.sets("$uac_req(hdrs)", hdrs + authorization)
    KSR.pv.seti("$uac_req(evroute)", 1)  # every reply and timeout comes to ksr_uac_event
    KSR.pv.sets("$uac_req(evparam)", str(nid))
    sent = KSR.uac.uac_req_send()
    # Per-NOTIFY lines at debug level: a fan-out to thousands of phones is one log line each
    # otherwise; the outcomes are in autoprov.resync_notify.
    KSR.dbg(f"autoprov resync notify={nid} aor={aor} contact={contact} "
             f"auth={'yes' if authorization else 'no'} sent={sent}\n")
    if sent < 0:
        _queue(str(nid), "final", 0, timed_out=True, after_challenge=False)


def _send_claimed(only_aor: str | None = None) -> int:
    rows = db.query("SELECT * FROM autoprov.claim_notifies(%s, %s, %s)",
                    (_SERVER_ID, CLAIM_BATCH, only_aor))
    for row in rows:
        send(row)
    return len(rows)


def _refresh_pending() -> None:
    """Mirror the pending AORs into shared memory, so REGISTER needs no query to check them."""
    global _pending_aors
    current = {str(r[0]) for r in db.query("SELECT aor FROM autoprov.resync_pending_aor")}
    for aor in current - _pending_aors:
        KSR.htable.sht_seti(PENDING_TABLE, aor, 1)
    for aor in _pending_aors - current:
        KSR.htable.sht_rm(PENDING_TABLE, aor)
    _pending_aors = current


def tick() -> None:
    try:
        _tick()
    except psycopg.Error as exc:  # Postgres away: requests wait in it, replies in memory
        _db_unavailable("timer", exc)


def _tick() -> None:
    global _last_run
    flush_events()
    now = time.monotonic()
    woken = db.notified(CHANNEL)
    if not woken and now - _last_run < _POLL_SECONDS:
        return
    _last_run = now
    # Dispatch and send in batches: the first phones hear from us while the rest is queued.
    batch = FIRST_BATCH
    while True:
        taken = int(db.query("SELECT autoprov.dispatch_unchecked(%s)", (batch,))[0][0])
        sent = _send_claimed()
        flush_events()  # the first phones' answers are in while the rest is being sent
        if taken < batch and sent < CLAIM_BATCH:
            break
        batch = DISPATCH_BATCH
    db.query("SELECT autoprov.expire_notifies(%s)", (LOST_AFTER,))
    _refresh_pending()


def after_register(user: str, domain: str) -> None:
    aor = f"{user}@{domain}"
    if KSR.htable.sht_get(PENDING_TABLE, aor) is None:
        return  # the plain refresh of an unchanged device: memory only
    try:
        db.query("SELECT autoprov.dispatch_for_aor(%s, %s)", (user, domain))
        _send_claimed(aor)
    except psycopg.Error as exc:  # the timer sends it once Postgres is back
        _db_unavailable("REGISTER", exc)


def _answer_challenge(nid: int, code: int) -> bool:
    """Send the NOTIFY again with the line's credentials; False if it cannot be answered."""
    try:
        rows = db.query("SELECT * FROM autoprov.notify_send_info WHERE id = %s", (nid,))
    except psycopg.Error as exc:
        _db_unavailable("challenge", exc)
        return False
    if not rows:
        return False
    row = rows[0]
    challenge = pv("$hdr(WWW-Authenticate)" if code == 401 else "$hdr(Proxy-Authenticate)")
    contact, username, password = str(row[2]), str(row[8]), str(row[9])
    try:
        value = digest.authorization(challenge, "NOTIFY", contact, username, password)
    except digest.UnsupportedChallengeError as exc:
        KSR.warn(f"autoprov resync notify={nid} cannot answer challenge: {exc}\n")
        return False
    name = "Authorization" if code == 401 else "Proxy-Authorization"
    send(row, f"{name}: {value}\r\n")
    return True


def _first_challenge(nid: str) -> bool:
    """A NOTIFY's events come one after another (challenge, then the retry's answer)."""
    first = KSR.htable.sht_get(CHALLENGED_TABLE, nid) is None
    KSR.htable.sht_seti(CHALLENGED_TABLE, nid, 1)
    return first


def _queue(nid: str, stage: str, code: int, timed_out: bool, after_challenge: bool) -> None:
    _store(int(nid), stage, code, timed_out, after_challenge, time.time())
    KSR.dbg(f"autoprov resync notify={nid} code={code} {stage}\n")


def _store(nid: int, stage: str, code: int, timed_out: bool, after_challenge: bool,
           at: float) -> None:
    KSR.htable.sht_sets(EVENTS_TABLE, f"{nid}.{stage}",
                        f"{code}:{int(timed_out)}:{int(after_challenge)}:{at:.6f}")


def on_uac_event() -> None:
    nid = pv("$uac_req(evparam)")
    if not nid.isdigit():
        return  # not one of ours
    code = int(pv("$uac_req(evcode)") or 0)
    timed_out = pv("$uac_req(evtype)") == "2"
    first = not timed_out and code in (401, 407) and _first_challenge(nid)
    if first and _answer_challenge(int(nid), code):
        _queue(nid, "challenge", code, timed_out=False, after_challenge=False)
        return
    after = not first and KSR.htable.sht_get(CHALLENGED_TABLE, nid) is not None
    _queue(nid, "final", code, timed_out, after)


def flush_events() -> None:
    """Record the queued replies in one round trip (in any order: each carries its stage)."""
    if KSR.htable.sht_iterator_start("ev", EVENTS_TABLE) < 0:
        return
    events = []
    while KSR.htable.sht_iterator_next("ev") > 0:
        key, value = pv("$shtitkey(ev)"), pv("$shtitval(ev)")
        KSR.htable.sht_iterator_rm("ev")
        nid, _, stage = key.partition(".")
        fields = value.split(":")
        if nid.isdigit() and len(fields) == 4 and fields[0].isdigit():
            events.append((int(nid), int(fields[0]), fields[1] == "1", stage == "challenge",
                           fields[2] == "1", float(fields[3])))
    KSR.htable.sht_iterator_end("ev")
    if not events:
        return
    try:
        db.query("SELECT autoprov.record_notify_outcomes(%s, %s, %s, %s, %s, %s)",
                 tuple([e[i] for e in events] for i in range(6)))
    except psycopg.Error:
        for event in events:  # keep them for the next tick
            _store(event[0], "challenge" if event[3] else "final", event[1], event[2], event[4],
                   event[5])
        raise
