"""Calls through the proxy: every request but REGISTER and our own keepalive, in the stages of
Kamailio's reference KEMI script (kamailio-basic-kemi-python.py): NAT detection, CANCEL and
retransmissions, in-dialog requests (loose routing), authentication, then the destination:
a local subscriber's contacts (forked in parallel), the upstream, or a clear refusal.

- A local subscriber (From in one of our domains) authenticates every out-of-dialog request with
  a 407 digest; its From user must be the authenticated user (403 and a fail2ban line as for
  REGISTER, counted towards the same ban).
- Requests from the upstream's address and from sip_trusted_sources need no digest.
- Our domains are those of the subscribers (and our own addresses). A user there with bindings
  gets the request on all of them at once (the first 200 wins, tm CANCELs the others); a
  subscriber with none gets 480; a number (sip_upstream_pattern) that is no subscriber, and any
  other domain, goes to sip_upstream; anything else is 404.
- NAT: force_rport for every request; a first hop behind NAT gets its Contact aliased
  (set_contact_alias), which in-dialog requests undo (handle_ruri_alias), so the answer of a
  phone behind NAT reaches it where it is, not at its private address.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time

import KSR
import psycopg

from autoprov import config
from kemi import ban, credentials, db, media
from kemi.sip import pv, reply, source

_settings = config.load()
_NUMBER = re.compile(_settings.sip_upstream_pattern)
_UPSTREAM = _settings.sip_upstream
_REFUSED = {-2: "invalid-password", -3: "unknown-user", -8: "user-mismatch"}
INVALID_PASSWORD = -2
NO_CREDENTIALS = -5
DOMAINS_TTL_S = 10.0
# nat_uac_test for replies: a private Contact (1) or SDP address (8), or a Contact address or
# port other than where the reply came from (32, 64).
REPLY_NAT_TESTS = 1 | 8 | 32 | 64
# Requests whose replies may carry SDP or a Contact for the dialog.
DIALOG_METHODS = ("INVITE", "UPDATE", "PRACK")
LOGGED_MAX = 128


def _upstream_addresses(uri: str) -> set[str]:
    """The addresses the upstream's host name stands for (trusted like sip_trusted_sources)."""
    match = re.match(r"sips?:(?:[^@]*@)?(\[[^\]]+\]|[^:;>]+)", uri)
    if not match:
        return set()
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(match.group(1).strip("[]"), None)}
    except OSError:
        return set()


_TRUSTED = [ipaddress.ip_network(cidr, strict=False) for cidr in _settings.sip_trusted_sources]
_UPSTREAM_ADDRESSES = _upstream_addresses(_UPSTREAM) if _UPSTREAM else set()
_ANY_TRUSTED = bool(_TRUSTED or _UPSTREAM_ADDRESSES)

_domains: set[str] = set()
_domains_read = 0.0


def _loggable(text: str) -> str:
    return "".join(c if c.isprintable() and not c.isspace() else "?" for c in text[:LOGGED_MAX])


def _trusted(address: str) -> bool:
    if address in _UPSTREAM_ADDRESSES:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in _TRUSTED)


def _our_domain(domain: str) -> bool:
    """A domain some subscriber is in (read at most every DOMAINS_TTL_S), or one of our own
    addresses."""
    global _domains, _domains_read
    now = time.monotonic()
    if now - _domains_read > DOMAINS_TTL_S:
        try:
            _domains = {str(r[0]).lower() for r in
                        db.query("SELECT DISTINCT domain FROM subscriber")}
            _domains_read = now
        except psycopg.Error:
            pass  # the domains known last
    return domain.lower() in _domains or KSR.is_myself(f"sip:{domain}")


def _is_subscriber(user: str, domain: str) -> bool:
    try:
        return bool(db.query("SELECT 1 FROM subscriber WHERE username = %s AND domain = %s",
                             (user, domain)))
    except psycopg.Error:
        return True  # cannot tell: "not available now" is the safer answer than "no such user"


def route(method: str) -> None:
    """Every request Router does not answer itself; `method` is its $rm (compared in Python:
    each KSR.is_<METHOD>() is a call into Kamailio, and this runs for every message of a call)."""
    _detect_nat()
    if method == "CANCEL":
        if KSR.tm.t_check_trans() > 0:
            _relay(method)
        return
    if KSR.siputils.has_totag() > 0:
        _within_dialog(method)
        return
    if KSR.tmx.t_precheck_trans() > 0:
        KSR.tm.t_check_trans()  # a retransmission: tm answers it from the transaction
        return
    if KSR.tm.t_check_trans() == 0:
        return
    if method == "ACK":
        return  # an ACK for nothing we sent: absorbed
    if not _authorized(method):
        return
    KSR.hdr.remove("Route")
    if method in ("INVITE", "SUBSCRIBE"):  # stay in the dialog's path
        KSR.rr.record_route()
    _to_destination(method)


def _detect_nat() -> None:
    KSR.force_rport()
    if KSR.nathelper.nat_uac_test(19) > 0 and KSR.siputils.is_first_hop() > 0:
        KSR.setflag(media.NAT_FLAG)
        KSR.nathelper.set_contact_alias()


def on_reply() -> None:
    """A reply to a relayed INVITE, UPDATE or PRACK: a callee behind NAT gets its Contact
    aliased like a caller's (the caller's ACK, BYE and re-INVITE then reach it where it is), and
    its SDP goes through the media relay."""
    status = int(KSR.pv.get("$rs") or 0)
    if not 100 < status < 300:
        return
    behind_nat = KSR.nathelper.nat_uac_test(REPLY_NAT_TESTS) > 0
    if behind_nat and KSR.hdr.is_present("Contact") > 0:
        KSR.nathelper.set_contact_alias()
    media.on_reply(behind_nat)


def _within_dialog(method: str) -> None:
    if KSR.rr.loose_route() > 0:
        if not KSR.isdsturiset():
            KSR.nathelper.handle_ruri_alias()
        # A re-INVITE to a phone behind NAT (its aliased Contact gave the destination): its
        # answer's Contact is aliased too.
        _relay(method, method in DIALOG_METHODS and KSR.isdsturiset())
        return
    if method == "ACK":
        if KSR.tm.t_check_trans() > 0:
            _relay(method)
        return  # an ACK of a reply we sent ourselves, or stray: absorbed
    reply(404, "Not Here")


def _authorized(method: str) -> bool:
    """Out of dialog: the upstream and trusted sources pass; a local subscriber authenticates
    with its own account; anyone else is refused."""
    if _ANY_TRUSTED and _trusted(pv("$si")):
        return True
    realm = pv("$fd")
    if not realm or not _our_domain(realm):
        KSR.warn(f"autoprov relay refused method={_loggable(method)} "
                 f"from_domain={_loggable(realm)} from={source()}\n")
        reply(403, "Forbidden")
        return False
    user = pv("$au")
    if not user:
        KSR.auth.auth_challenge(realm, 1)  # a call's first INVITE: a 407, no lookup
        return False
    # A phone that registered here has its verified HA1 cached (kemi/credentials.py): its calls
    # cost no query either, and go on while the database is away.
    cached = credentials.check_cached(user, realm)
    if cached is not None and cached > 0:
        result = cached
    elif credentials.database_down():
        if cached is None or cached == INVALID_PASSWORD:
            reply(503, "Service Unavailable", f"Retry-After: {credentials.RETRY_AFTER_S}")
            return False
        result = cached if cached is not None else NO_CREDENTIALS
    else:
        result = int(KSR.auth_db.auth_check(realm, "subscriber", 1))
        if result > 0:
            credentials.remember(user, realm)
    if result > 0:
        KSR.auth.consume_credentials()
        return True
    reason = _REFUSED.get(result)
    if reason is None:
        KSR.auth.auth_challenge(realm, 1)  # 407 outside REGISTER
        return False
    KSR.warn(f"autoprov auth failed method={_loggable(method)} "
             f"user={_loggable(pv('$au') + '@' + realm)} aor={_loggable(pv('$fu'))} "
             f"reason={reason} from={source()}\n")
    reply(403, "Forbidden")
    ban.auth_failed(pv("$si"))
    return False


def _to_destination(method: str) -> None:
    user, domain = pv("$rU"), pv("$rd")
    if not _our_domain(domain):
        _to_upstream(method)
        return
    if not user:
        reply(484, "Address Incomplete")
        return
    found = int(KSR.registrar.lookup("location"))
    if found > 0:
        # Every contact a branch: parallel forking. A callee behind NAT (its binding's received
        # became the destination), or several contacts, any of which may be: the answers'
        # Contacts are looked at.
        _relay(method, method in DIALOG_METHODS and (
            KSR.isdsturiset() or int(KSR.pv.get("$branch(count)") or 0) > 0))
    elif found == -2:
        reply(405, "Method Not Allowed")
    elif _is_subscriber(user, domain):
        reply(480, "Temporarily Unavailable")
    elif _NUMBER.match(user):
        _to_upstream(method)
    else:
        reply(404, "Not Found")


def _to_upstream(method: str) -> None:
    if not _UPSTREAM:
        reply(404, "Not Found")
        return
    KSR.setdsturi(_UPSTREAM)
    _relay(method)


def _relay(method: str, callee_may_be_nated: bool = False) -> None:
    """Relay statefully; the answers to INVITE, UPDATE and PRACK come back through on_reply when
    their SDP is relayed or their Contact may need an alias (otherwise that route is not run:
    it would be a Python call for every ringing and every answer)."""
    if method != "CANCEL":
        media.before_relay(method)
        if method in DIALOG_METHODS and (media.enabled() or callee_may_be_nated):
            KSR.tm.t_on_reply("ksr_onreply_call")
    if KSR.tm.t_relay() < 0:
        KSR.sl.sl_reply_error()
