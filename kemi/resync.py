"""The NOTIFY path: check-sync to every registered contact of a device, outcomes recorded.

Requests and per-contact NOTIFY rows live in Postgres (sql/002_resync.sql); this module only
dispatches, sends and records, so nothing is kept only in a process's memory for long. The
phone's 401/407 is answered here (kemi/digest.py).
- tick(): the rtimer process, every 20 ms: records queued replies, and dispatches and sends
  when Postgres NOTIFYs it (or every poll interval); NOTIFYs nobody answered are swept.
- after_register(): a REGISTER of an AOR with a pending request sends right after the 200 OK.
- on_reply(): every reply to a NOTIFY (Kamailio's core reply route, in the worker that got it):
  a challenge is answered at once, a final reply queued for tick() to record in a batch (a
  fan-out to thousands of phones must not cost each worker a database write per reply).

Every NOTIFY is sent with tm's t_uac_send, whose headers set From (with its tag), To, Call-ID and
CSeq: a challenge is answered as RFC 3261 (8.1.3.5, 22.2) says, in the same Call-ID, From tag and
To, the CSeq one higher. (The uac module cannot: in 5.6 it sets no From tag or CSeq, and copies
a 32 KB buffer per request.) A reply may reach any worker, so each NOTIFY's dialog is kept in
shared memory (`resync_dialogs`) until its final reply or the sweep.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence

import KSR
import psycopg

from autoprov import config
from kemi import db, digest
from kemi.sip import pv

CHANNEL = "autoprov_resync"
PENDING_TABLE = "resync_pending"  # AORs whose next REGISTER triggers a NOTIFY
EVENTS_TABLE = "resync_events"  # replies to record: "nid.stage" -> "code:timed_out:after:time"
# Call-ID of a NOTIFY in flight -> "nid|CSeq|stale answers left|sent at|challenged|row", the row
# (notify_send_info, JSON) holding what answering a challenge needs, the line's password too
# (memory only, never on disk).
DIALOGS_TABLE = "resync_dialogs"
CALLID_PREFIX = "resync-"
QUEUED_PAYLOAD = "queued"  # sql/014: a dispatch queued NOTIFYs (no new request)
STATE_TABLE = "autoprov_state"
IN_FLIGHT_KEY = "resync_in_flight"  # NOTIFYs sent whose final outcome is not in yet
# tm gives up after fr_timer (5 s, kamailio.cfg) without telling any route: a NOTIFY without a
# final reply by then (and a margin) was not answered.
ANSWER_TIMEOUT_S = 6.0
SWEEP_EVERY_S = 1.0
CHALLENGE_HOLD_S = 1.0  # see _sweep_dialogs
STALE_ANSWERS = 1  # a stale=true challenge of our answer is answered once more
SEND_ATTEMPTS = 3  # see _not_sent
CLAIM_BATCH = 1000
FIRST_BATCH = 50  # small, so the first phones hear from us at once
LOST_AFTER = "40 seconds"  # a NOTIFY without an answer by then is recorded as no answer

_settings = config.load()
_EVENT_OVERRIDES = dict(
    entry.split("=", 1) for entry in _settings.notify_event_overrides if "=" in entry
)
_SERVER_ID = _settings.sip_server_id
_DEBUG = _settings.sip_debug >= 3  # per-NOTIFY lines: not even formatted otherwise
_POLL_SECONDS = _settings.resync_poll_ms / 1000

_last_run = 0.0
_last_sweep = 0.0
_last_expire = 0.0
_backlog = False  # NOTIFYs queued beyond the window: the next tick goes on without being woken
# A NOTIFY in flight holds a few KB of Kamailio's shared memory (its transaction, its dialog
# here), and tm keeps a completed one a few seconds more (its wait timer): 16 KB each, at most a
# third of sip_shm_mb; the rest wait in Postgres. A send that fails for memory halves the window
# (_not_sent), which then grows back by a tenth per tick.
# Memory aside, more in flight gains nothing: the phones' answers come back in a burst that
# overflows socket buffers (on the way or at the proxy), and the NOTIFYs are sent again by tm.
MAX_IN_FLIGHT = max(100, min(3000, _settings.sip_shm_mb * 1024 // 3 // 16))
MIN_WINDOW = 50
_window = MAX_IN_FLIGHT
_send_failed = False
_pending_aors: set[str] = set()
_refused: dict[str, int] = {}  # NOTIFY id -> sends Kamailio refused in a row
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


def _proxy_contact(sock: str) -> str:
    """Our Contact for a NOTIFY leaving on socket `proto:host:port` (as `location` has it)."""
    proto, _, address = sock.partition(":")
    host, _, port = address.rpartition(":")
    if not proto or not host or not port.isdigit():
        return ""
    return f"Contact: <sip:autoprov@{host}:{port};transport={proto}>\r\n"


def _headers(row: Sequence[object]) -> str:
    """What every NOTIFY of this row carries besides From, To, Call-ID and CSeq."""
    event, sock, state = str(row[7]), str(row[4] or ""), str(row[10] or "active")
    return (f"Event: {event_for(event, str(row[6]))}\r\nSubscription-State: {state}\r\n"
            + _proxy_contact(sock))


_random, _used = "", 0


def _token() -> str:
    """16 random hex digits (Call-ID and From tag: unguessable, so nobody off the path forges a
    phone's reply), from the kernel in 4 KB draws rather than a system call per NOTIFY."""
    global _random, _used
    if _used + 16 > len(_random):
        _random, _used = secrets.token_hex(4096), 0
    _used += 16
    return _random[_used - 16:_used]


def _dialog(nid: object, cseq: int, stale_left: int, challenged: bool, row: str) -> str:
    return f"{nid}|{cseq}|{stale_left}|{time.time():.3f}|{int(challenged)}|{row}"


def _send_notify(row: Sequence[object], callid: str, from_tag: str, cseq: int,
                 authorization: str = "") -> bool:
    """The NOTIFY of this notify_send_info row, in dialog (Call-ID, From tag) at CSeq `cseq`."""
    aor, contact, received, sock = row[1:5]
    uri = f"sip:{aor}"
    headers = (f"From: <{uri}>;tag={from_tag}\r\nTo: <{uri}>\r\nCall-ID: {callid}\r\n"
               f"CSeq: {cseq} NOTIFY\r\n{_headers(row)}{authorization}")
    # received: behind NAT, where the REGISTER really came from (the next hop).
    return KSR.tm.t_uac_send("NOTIFY", str(contact), str(received or ""), str(sock or ""),
                             headers, "") > 0


def send(row: tuple[object, ...]) -> None:
    """Send one check-sync NOTIFY (a row of autoprov.notify_send_info)."""
    nid = row[0]
    token = _token()
    callid = f"{CALLID_PREFIX}{nid}-{token[:12]}@autoprov"
    # Before sending: the phone's challenge may reach another worker before this returns.
    KSR.htable.sht_sets(DIALOGS_TABLE, callid,
                        _dialog(nid, 1, STALE_ANSWERS, False, json.dumps(row, default=str)))
    KSR.htable.sht_inc(STATE_TABLE, IN_FLIGHT_KEY)
    sent = _send_notify(row, callid, token[8:], 1)
    if _DEBUG:  # a fan-out to thousands of phones is one line each; outcomes are in the database
        KSR.dbg(f"autoprov resync notify={nid} aor={row[1]} contact={row[2]} sent={sent}\n")
    if not sent:
        KSR.htable.sht_rm(DIALOGS_TABLE, callid)
        _not_sent(str(nid), str(row[4] or ""))
    elif _refused:
        _refused.pop(str(nid), None)


def _not_sent(nid: str, sock: str) -> None:
    """Kamailio could not send it: short of shared memory (too much in flight), it goes back in
    the queue, not recorded as unanswered, and the window shrinks (it grows back while sends
    succeed). Refused SEND_ATTEMPTS times in a row (a binding on a socket this proxy no longer
    listens on, say), it is no answer: the phone is tried again after its next REGISTER."""
    global _window, _send_failed
    KSR.htable.sht_dec(STATE_TABLE, IN_FLIGHT_KEY)
    _window = max(MIN_WINDOW, _window // 2)
    _send_failed = True
    tries = _refused.pop(nid, 0) + 1
    if tries < SEND_ATTEMPTS:
        try:
            db.query("UPDATE autoprov.resync_notify SET state = 'queued', sent_at = NULL"
                     " WHERE id = %s AND state = 'sent'", (int(nid),))
            _refused[nid] = tries
            return
        except psycopg.Error:
            pass  # still 'sent': recorded as unanswered
    else:
        KSR.warn(f"autoprov resync notify={nid} not sent {tries} times (socket {sock}):"
                 " recorded as no answer\n")
    _store(int(nid), "final", 0, True, False, time.time())  # (in flight: counted down above)


def _send_rows(rows: list[tuple[object, ...]]) -> int:
    for row in rows:
        send(row)
    return len(rows)


def _send_claimed(only_aor: str | None = None, limit: int = CLAIM_BATCH) -> int:
    """Send this proxy's queued NOTIFYs (queued by another proxy's dispatch, a REGISTER, a
    retry with the previous password, or put back when Kamailio could not send them)."""
    return _send_rows(db.query("SELECT * FROM autoprov.claim_notifies(%s, %s, %s)",
                               (_SERVER_ID, limit, only_aor)))


def _dispatch_and_send(limit: int) -> int:
    """Look for the contacts of unchecked requests and send their NOTIFYs, claimed by the same
    statement (no second write of each row); fewer than `limit` sent: no request left."""
    return _send_rows(db.query("SELECT * FROM autoprov.dispatch_and_claim(%s, %s)",
                               (_SERVER_ID, limit)))


def _in_flight() -> int:
    return int(KSR.htable.sht_get(STATE_TABLE, IN_FLIGHT_KEY) or 0)


def _recount_in_flight() -> None:
    """Once a second while NOTIFYs are out: the counter set from the database (a worker that
    died between sending and recording cannot leave the window shut)."""
    if _in_flight() <= 0 and not _backlog:
        return
    rows = db.query("SELECT count(*) FROM autoprov.resync_notify"
                    " WHERE state = 'sent' AND server_id = %s", (_SERVER_ID,))
    KSR.htable.sht_seti(STATE_TABLE, IN_FLIGHT_KEY, int(rows[0][0]) if rows else 0)


def _refresh_pending() -> None:
    """Mirror the pending AORs into shared memory, so REGISTER needs no query to check them."""
    global _pending_aors
    current = {str(r[0]) for r in db.query("SELECT aor FROM autoprov.resync_pending_aor")}
    for aor in current - _pending_aors:
        KSR.htable.sht_seti(PENDING_TABLE, aor, 1)
    for aor in _pending_aors - current:
        KSR.htable.sht_rm(PENDING_TABLE, aor)
    _pending_aors = current


def tick() -> bool:
    """One timer tick; False when it found nothing to do (no reply to record, no request)."""
    try:
        return _tick()
    except psycopg.Error as exc:  # Postgres away: requests wait in it, replies in memory
        _db_unavailable("timer", exc)
        return True


def _tick() -> bool:
    global _last_run, _backlog
    _sweep_dialogs()
    recorded = flush_events()
    now = time.monotonic()
    payloads = db.notifications(CHANNEL)
    # New requests (or notifications possibly missed): dispatch them; "queued" only: send.
    new_requests = payloads is None or any(p != QUEUED_PAYLOAD for p in payloads)
    polled = now - _last_run >= _POLL_SECONDS
    if not (new_requests or payloads or _backlog or polled):
        return recorded > 0
    _last_run = now
    if new_requests or polled:
        _dispatch_woken()
    _send_window(claim_queued=bool(payloads) or payloads is None or polled)
    _expire(now)
    return True


# Requests the first batch found without a binding whose phone has one now (it registered before
# the mirror could tell its REGISTER): looked at again. Only those rows are touched.
_RECHECK = """
UPDATE autoprov.resync_request r SET checked = false
 WHERE r.state = 'pending' AND r.checked AND r.updated_at >= %s
   AND EXISTS (SELECT 1 FROM autoprov.device_line l
                 JOIN subscriber s ON s.id = l.subscriber_id
                 JOIN location loc ON loc.username = s.username AND loc.domain = s.domain
                WHERE l.device_id = r.device_id AND loc.expires > localtimestamp)
"""


def _dispatch_woken() -> None:
    """New requests: the first ones go out at once; then the pending AORs are mirrored into
    shared memory (a fan-out to a fleet mirrors thousands: after its first NOTIFYs, not before),
    and the first batch's requests that found no binding are checked again, since their phone may
    have registered before the mirror told its REGISTER about them."""
    started = db.query("SELECT clock_timestamp()")[0][0]
    room = _window - _in_flight()
    if room > 0:
        _dispatch_and_send(min(FIRST_BATCH, room))
    _refresh_pending()
    db.query(_RECHECK, (started,))


def _send_window(claim_queued: bool) -> None:
    """Send in batches while the window of NOTIFYs in flight has room: NOTIFYs queued for this
    proxy (when something may have queued some), then new requests' ones; what does not fit
    waits in Postgres for the next tick (no longer woken by the database)."""
    global _backlog, _window, _send_failed
    if not _send_failed:
        _window = min(MAX_IN_FLIGHT, _window + max(1, _window // 10))
    _send_failed = False
    claim_queued = claim_queued or _backlog
    while True:
        room = _window - _in_flight()
        if room <= 0 or _send_failed:
            _backlog = True
            return
        limit = min(room, CLAIM_BATCH)
        if claim_queued:
            sent = _send_claimed(limit=limit)
            claim_queued = sent >= limit
            limit -= sent
        dispatched = _dispatch_and_send(limit) if limit > 0 else 0
        flush_events()  # the first phones' answers are in while the rest is being sent
        if not claim_queued and dispatched < limit:
            _backlog = False
            return


def _expire(now: float) -> None:
    global _last_expire
    if now - _last_expire < SWEEP_EVERY_S:
        return
    _last_expire = now
    db.query("SELECT autoprov.expire_notifies(%s)", (LOST_AFTER,))
    _recount_in_flight()


def after_register(user: str, domain: str) -> None:
    aor = f"{user}@{domain}"
    if KSR.htable.sht_get(PENDING_TABLE, aor) is None:
        return  # the plain refresh of an unchanged device: memory only
    try:
        db.query("SELECT autoprov.dispatch_for_aor(%s, %s)", (user, domain))
        _send_claimed(aor)
    except psycopg.Error as exc:  # the timer sends it once Postgres is back
        _db_unavailable("REGISTER", exc)


def _challenge_header(code: int) -> str:
    return pv("$hdr(WWW-Authenticate)" if code == 401 else "$hdr(Proxy-Authenticate)")


def _authorization(nid: str, code: int, row: list[object]) -> str:
    """The header answering the challenge in this reply (the current message) with the line's
    credentials; '' if it cannot be answered."""
    contact, username, password = str(row[2]), str(row[8]), str(row[9])
    try:
        value = digest.authorization(_challenge_header(code), "NOTIFY", contact, username,
                                     password, cnonce=_token())
    except digest.UnsupportedChallengeError as exc:
        KSR.warn(f"autoprov resync notify={nid} cannot answer challenge: {exc}\n")
        return ""
    return f"{'Authorization' if code == 401 else 'Proxy-Authorization'}: {value}\r\n"


def _final(nid: str, code: int, timed_out: bool, after_challenge: bool) -> None:
    """A NOTIFY's outcome, queued for the timer to record; it is no longer in flight."""
    KSR.htable.sht_dec(STATE_TABLE, IN_FLIGHT_KEY)
    _store(int(nid), "final", code, timed_out, after_challenge, time.time())
    if _DEBUG:
        KSR.dbg(f"autoprov resync notify={nid} code={code} final\n")


def _store(nid: int, stage: str, code: int, timed_out: bool, after_challenge: bool,
           at: float) -> None:
    KSR.htable.sht_sets(EVENTS_TABLE, f"{nid}.{stage}",
                        f"{code}:{int(timed_out)}:{int(after_challenge)}:{at:.6f}")


def on_reply() -> None:
    """Any reply Kamailio receives (core reply route): those to our NOTIFYs are handled here."""
    callid = pv("$ci")
    if not callid.startswith(CALLID_PREFIX):
        return
    code = int(pv("$rs") or 0)
    if code < 200:
        return  # provisional
    # Two workers may get the same reply at once (a phone answering tm's retransmission of a
    # NOTIFY too): under the slot's lock one of them moves the dialog on, the other then finds
    # it moved on (another CSeq) or gone.
    KSR.htable.sht_lock(DIALOGS_TABLE, callid)
    try:
        step = _advance(callid, code)
    finally:
        KSR.htable.sht_unlock(DIALOGS_TABLE, callid)
    if step is None:
        return
    nid, challenged, answer = step
    if answer is not None:
        row, cseq, authorization = answer
        if _send_notify(row, callid, pv("$ft"), cseq, authorization):
            return  # recorded with the final reply (or by the sweep, if that is slow)
        KSR.htable.sht_rm(DIALOGS_TABLE, callid)
    _final(nid, code, timed_out=False, after_challenge=challenged)


def _advance(callid: str, code: int
             ) -> tuple[str, bool, tuple[list[object], int, str] | None] | None:
    """The dialog's next step for this final reply, under its lock: (NOTIFY id, challenged
    before, the answer to send: row, CSeq, header) with the dialog noted for the answer's reply,
    or without an answer with the dialog dropped; None when the reply is not for it."""
    state = KSR.htable.sht_get(DIALOGS_TABLE, callid)
    if state is None:
        return None
    nid, cseq, stale_left, _sent, challenged, row_json = str(state).split("|", 5)
    if pv("$cs") != cseq:
        return None  # a late reply to a NOTIFY since answered with credentials
    if code in (401, 407):
        # A stale nonce (RFC 7616 3.3) on our answer: the credentials were right, the nonce
        # expired meanwhile; answered again STALE_ANSWERS times at most.
        left = int(stale_left) - (challenged != "0")
        if challenged == "0" or (left >= 0 and _stale(code)):
            row = json.loads(row_json)
            authorization = _authorization(nid, code, row)
            if authorization:
                KSR.htable.sht_sets(DIALOGS_TABLE, callid,
                                    _dialog(nid, int(cseq) + 1, left, True, row_json))
                return nid, challenged != "0", (row, int(cseq) + 1, authorization)
    KSR.htable.sht_rm(DIALOGS_TABLE, callid)
    return nid, challenged != "0", None


def _stale(code: int) -> bool:
    try:
        return digest.parse_challenge(_challenge_header(code)).get("stale", "").lower() == "true"
    except digest.UnsupportedChallengeError:
        return False


def _sweep_dialogs() -> None:
    """In the timer: NOTIFYs tm gave up on without a final reply are no answer (tm tells no
    route of a locally sent request's timeout). A challenge is recorded with the final reply,
    which says `challenged` itself; only a phone still silent CHALLENGE_HOLD_S after our answer
    gets its challenge recorded meanwhile (once, or twice if sweeps drift: it is idempotent)."""
    global _last_sweep
    now = time.time()
    if now - _last_sweep < SWEEP_EVERY_S:
        return
    _last_sweep = now
    if KSR.htable.sht_iterator_start("dl", DIALOGS_TABLE) < 0:
        return
    # sht_iterator_rm moves the iterator on to the next item itself (> 0 while there is one):
    # calling sht_iterator_next after it would skip that item.
    more = KSR.htable.sht_iterator_next("dl") > 0
    while more:
        nid, _cseq, _stale_left, sent, challenged, _row = pv("$shtitval(dl)").split("|", 5)
        age = now - float(sent)
        if age >= ANSWER_TIMEOUT_S:
            more = KSR.htable.sht_iterator_rm("dl") > 0
            _final(nid, 408, timed_out=True, after_challenge=challenged == "1")
            continue
        if challenged == "1" and CHALLENGE_HOLD_S <= age < CHALLENGE_HOLD_S + SWEEP_EVERY_S:
            _store(int(nid), "challenge", 0, False, False, float(sent))  # (no code recorded)
        more = KSR.htable.sht_iterator_next("dl") > 0
    KSR.htable.sht_iterator_end("dl")


def flush_events() -> int:
    """Record the queued replies in one round trip (in any order: each carries its stage); how
    many there were."""
    if KSR.htable.sht_iterator_start("ev", EVENTS_TABLE) < 0:
        return 0
    events = []
    more = KSR.htable.sht_iterator_next("ev") > 0
    while more:
        key, value = pv("$shtitkey(ev)"), pv("$shtitval(ev)")
        more = KSR.htable.sht_iterator_rm("ev") > 0  # and on to the next one (see above)
        nid, _, stage = key.partition(".")
        fields = value.split(":")
        if nid.isdigit() and len(fields) == 4 and fields[0].isdigit():
            events.append((int(nid), int(fields[0]), fields[1] == "1", stage == "challenge",
                           fields[2] == "1", float(fields[3])))
    KSR.htable.sht_iterator_end("ev")
    if not events:
        return 0
    try:
        db.query("SELECT autoprov.record_notify_outcomes(%s, %s, %s, %s, %s, %s)",
                 tuple([e[i] for e in events] for i in range(6)))
    except psycopg.Error:
        for event in events:  # keep them for the next tick
            _store(event[0], "challenge" if event[3] else "final", event[1], event[2], event[4],
                   event[5])
        raise
    return len(events)
