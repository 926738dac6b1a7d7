"""The NOTIFY path: check-sync to every registered contact of a device, outcomes recorded.

Requests and per-contact NOTIFY rows live in Postgres (sql/002_resync.sql); this module only
dispatches, sends and records, so nothing is kept only in a process's memory. Three entry points:
The phone's 401/407 is answered here (kemi/digest.py), not by the uac module's own retry.
- tick(): the rtimer process, every 100 ms; works when Postgres NOTIFYs it or every poll interval.
- after_register(): a REGISTER of an AOR with a pending request sends right after the 200 OK.
- on_uac_event(): a NOTIFY's reply (or timeout) is recorded.
"""

from __future__ import annotations

import secrets
import time

import KSR

from autoprov import config
from kemi import db, digest
from kemi.sip import pv

CHANNEL = "autoprov_resync"
PENDING_TABLE = "resync_pending"  # htable of AORs whose next REGISTER triggers a NOTIFY
CLAIM_BATCH = 500
DISPATCH_BATCH = 500
LOST_AFTER = "40 seconds"  # a NOTIFY without an answer by then is recorded as no answer

_settings = config.load()
_EVENT_OVERRIDES = dict(
    entry.split("=", 1) for entry in _settings.notify_event_overrides if "=" in entry
)
_SERVER_ID = _settings.sip_server_id
_POLL_SECONDS = _settings.resync_poll_ms / 1000

_last_run = 0.0
_pending_aors: set[str] = set()


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
    KSR.info(f"autoprov resync notify={nid} aor={aor} contact={contact} "
             f"auth={'yes' if authorization else 'no'} sent={sent}\n")
    if sent < 0:
        _record(int(str(nid)), 0, timed_out=True)


def _answer_challenge(row: tuple[object, ...], code: int) -> None:
    """Send the NOTIFY again, with the line's credentials for the phone's challenge."""
    nid = int(str(row[0]))
    challenge = pv("$hdr(WWW-Authenticate)" if code == 401 else "$hdr(Proxy-Authenticate)")
    contact, username, password = str(row[2]), str(row[8]), str(row[9])
    try:
        value = digest.authorization(challenge, "NOTIFY", contact, username, password)
    except digest.UnsupportedChallengeError as exc:
        KSR.warn(f"autoprov resync notify={nid} cannot answer challenge: {exc}\n")
        _record(nid, code, timed_out=False)  # a second 401/407: challenge failed
        return
    name = "Authorization" if code == 401 else "Proxy-Authorization"
    send(row, f"{name}: {value}\r\n")


def _record(nid: int, code: int, timed_out: bool) -> str:
    rows = db.query("SELECT autoprov.record_notify_outcome(%s, %s, %s)", (nid, code, timed_out))
    return str(rows[0][0]) if rows else "ignored"


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
    global _last_run
    now = time.monotonic()
    woken = db.notified(CHANNEL)
    if not woken and now - _last_run < _POLL_SECONDS:
        return
    _last_run = now
    # Dispatch and send in batches: the first phones hear from us while the rest is queued.
    while True:
        taken = int(db.query("SELECT autoprov.dispatch_unchecked(%s)", (DISPATCH_BATCH,))[0][0])
        sent = _send_claimed()
        if taken < DISPATCH_BATCH and sent < CLAIM_BATCH:
            break
    db.query("SELECT autoprov.expire_notifies(%s)", (LOST_AFTER,))
    _refresh_pending()


def after_register(user: str, domain: str) -> None:
    aor = f"{user}@{domain}"
    if KSR.htable.sht_get(PENDING_TABLE, aor) is None:
        return  # the plain refresh of an unchanged device: memory only
    db.query("SELECT autoprov.dispatch_for_aor(%s, %s)", (user, domain))
    _send_claimed(aor)


def on_uac_event() -> None:
    nid = pv("$uac_req(evparam)")
    if not nid.isdigit():
        return  # not one of ours
    code = int(pv("$uac_req(evcode)") or 0)
    timed_out = pv("$uac_req(evtype)") == "2"
    # One round trip: the outcome, and what answering a challenge needs if it was one.
    rows = db.query(
        "SELECT o.outcome, i.* FROM autoprov.record_notify_outcome(%s, %s, %s) AS o(outcome)"
        " LEFT JOIN autoprov.notify_send_info i ON o.outcome = 'challenged' AND i.id = %s",
        (int(nid), code, timed_out, int(nid)))
    outcome = str(rows[0][0]) if rows else "ignored"
    KSR.info(f"autoprov resync notify={nid} code={code} outcome={outcome}\n")
    if outcome == "challenged" and rows[0][1] is not None:
        _answer_challenge(rows[0][1:], code)
