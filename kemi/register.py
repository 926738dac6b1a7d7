"""The REGISTER path: digest auth against `subscriber`, bindings saved to `location`."""

from __future__ import annotations

import KSR

from kemi import ban, bindings, contact, credentials, extension
from kemi.sip import pv, reply, source

# auth_check() results that mean "credentials were presented and are wrong": these get a 403
# and a log line for fail2ban. Anything else (no credentials, stale nonce) gets a challenge.
_REFUSED = {-2: "invalid-password", -3: "unknown-user", -8: "user-mismatch"}
QOP_AUTH = 1
AUTH_ERROR = -1  # auth_db could not look the user up (among others: the database is away)
INVALID_PASSWORD = -2
NO_CREDENTIALS = -5
PREVIOUS_CREDENTIALS = "autoprov.previous_credentials"
# A `received` contact parameter the client wrote, with its value (quoted or not), in POSIX ERE.
_CLIENT_RECEIVED = (r'/;[[:space:]]*received[[:space:]]*'
                    r'(=[[:space:]]*("[^"]*"|[^;,>[:space:]]*))?//gi')

LOGGED_MAX = 128


def _loggable(text: str) -> str:
    """A field of the fail2ban line as the client sent it, but one word (a line break in a folded
    header would start a line the client wrote) and short (the line stays one write)."""
    return "".join(c if c.isprintable() and not c.isspace() else "?" for c in text[:LOGGED_MAX])


def _contacts_acceptable(value: str) -> bool | None:
    """Refuse what is not a SIP Contact (None, 400 sent); drop a `received` the client wrote (only
    ours count): True when it did, so these Contacts are never trusted as known next time."""
    if not value:
        return False  # a query of the bindings
    try:
        client_received = contact.check(value)
    except contact.BadContactError:
        reply(400, "Bad Contact")
        return None
    if client_received:  # rare: the rewrite and re-parse cost nothing on ordinary REGISTERs
        KSR.textops.subst_hf("Contact", _CLIENT_RECEIVED, "a")
        KSR.textopsx.msg_apply_changes()
    return client_received


def _database_away() -> None:
    reply(503, "Service Unavailable", f"Retry-After: {credentials.RETRY_AFTER_S}")


def _authenticate(realm: str, user: str) -> int | None:
    """auth_check's result for the credentials' user `user` ($au), from the cached HA1 when this
    phone was verified before (no query), else from `subscriber`; None when the database is away
    and the phone unknown (503 sent). Every check also requires `user` to be the To user."""
    if not user:
        return NO_CREDENTIALS  # the first REGISTER of each registration: a challenge, no lookup
    cached = credentials.check_cached(user, realm)
    if cached is not None and cached > 0:
        return cached
    if credentials.database_down():
        if cached is None or cached == INVALID_PASSWORD:
            _database_away()
            return None
        return cached  # stale nonce and the like: challenged again
    result = int(KSR.auth_db.auth_check(realm, "subscriber", 1))
    if result > 0:
        credentials.remember(user, realm)
    elif result == INVALID_PASSWORD:
        # Mid-rotation the phone still holds the old password until it fetches its new config.
        previous = int(KSR.auth_db.auth_check(realm, PREVIOUS_CREDENTIALS, 1))
        if previous > 0:
            result = previous
    elif result == AUTH_ERROR and credentials.confirm_database_down():
        _database_away()
        return None
    return result


def handle() -> None:
    realm = pv("$td")
    if not realm:
        reply(400, "Missing To Domain")
        return
    user = pv("$au")
    result = _authenticate(realm, user)
    if result is None:
        return  # answered 503: the database is away and this phone is not known here
    if result < 0:
        reason = _REFUSED.get(result)
        if reason is None:
            KSR.auth.auth_challenge(realm, QOP_AUTH)
            return
        # One line, fixed shape, no secrets: "autoprov auth failed ... from=IP:PORT/PROTO".
        KSR.warn(
            f"autoprov auth failed method=REGISTER user={_loggable(pv('$au') + '@' + realm)} "
            f"aor={_loggable(pv('$tu'))} reason={reason} from={source()}\n"
        )
        reply(403, "Forbidden")
        ban.auth_failed(pv("$si"))
        return
    # The credentials' user is the To user (checked above); the REGISTER is answered here, so its
    # credentials need not be removed (consume_credentials) as before forwarding a request.
    aor = f"{user}@{realm}"
    # Checked once the phone is authenticated (a challenge saves nothing, and tells a stranger
    # nothing), and not again for the refresh of a binding whose Contact passed before, byte
    # for byte.
    contacts = pv("$(hdr(Contact)[*])")
    key = bindings.refresh_key(aor, contacts)
    known = bindings.bound(key)
    if not known:
        rewritten = _contacts_acceptable(contacts)
        if rewritten is None:
            return
        if rewritten:
            key = None
    # Behind NAT (private Contact, or Via not where it came from): reach it where it came from.
    if KSR.nathelper.nat_uac_test(19) > 0:
        KSR.nathelper.fix_nated_register()
    if not bindings.save(aor, contacts, key, known):
        KSR.err(f"autoprov register save failed aor={_loggable(aor)} from={source()}\n")
        KSR.sl.sl_reply_error()
        return
    # No log line per successful REGISTER: thousands of phones refresh all day, and the
    # binding itself is in `location`.
    extension.after_register(user, realm)
