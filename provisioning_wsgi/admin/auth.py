"""Who may use the operators' pages, and that a form was sent from them.

HTTP Basic authentication against the configured admin_user / admin_password (the admin port is
always TLS). Both names are compared in constant time, and both always, so timing tells nothing.
/metrics also takes `Authorization: Bearer admin_metrics_token` (a scraper's), compared the same.

Browsers send Basic credentials with any request to the site, whoever's page made it, so a
state-changing form also carries a token (double-submit: the same random value in a cookie that
only our pages can set and in the form) and must come from our own origin.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from enum import Enum

from provisioning_wsgi.admin import web

CSRF_COOKIE = "__Host-autoprov-csrf"
CSRF_FIELD = "csrf"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")


class Verdict(Enum):
    OK = "ok"
    MISSING = "no-credentials"
    WRONG = "wrong-credentials"


def _digest(text: str) -> bytes:
    # Equal-length inputs for compare_digest, whatever was typed.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class Credentials:
    def __init__(self, user: str, password: str) -> None:
        self._user = _digest(user)
        self._password = _digest(password)

    def check(self, authorization: str | None) -> Verdict:
        """The verdict on an Authorization header."""
        if not authorization:
            return Verdict.MISSING
        scheme, _, encoded = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return Verdict.MISSING
        try:
            raw = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return Verdict.WRONG
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError:
            decoded = raw.decode("latin-1")
        user, sep, password = decoded.partition(":")
        same_user = hmac.compare_digest(_digest(user), self._user)
        same_password = hmac.compare_digest(_digest(password), self._password)
        return Verdict.OK if sep and same_user & same_password else Verdict.WRONG


class BearerToken:
    def __init__(self, token: str) -> None:
        self._token = _digest(token)

    def check(self, authorization: str | None) -> Verdict:
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return Verdict.MISSING
        return Verdict.OK if hmac.compare_digest(_digest(token.strip()), self._token) \
            else Verdict.WRONG


def either(authorization: str | None, *checks: Credentials | BearerToken) -> Verdict:
    """OK if one of the configured checks accepts the header. A Basic or Bearer credential that
    none accepts is WRONG, also when that kind is not configured: it was a guess all the same."""
    verdicts = [check.check(authorization) for check in checks]
    if Verdict.OK in verdicts:
        return Verdict.OK
    scheme = (authorization or "").strip().partition(" ")[0].lower()
    return Verdict.WRONG if scheme in ("basic", "bearer") else Verdict.MISSING


def new_token() -> str:
    return secrets.token_urlsafe(32)


def valid_token(text: str | None) -> bool:
    return bool(text) and _TOKEN.match(text or "") is not None


def cookie_token(cookie_header: str | None) -> str | None:
    """Our CSRF token from a Cookie header, if it holds a well-formed one."""
    for part in (cookie_header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == CSRF_COOKIE and valid_token(value):
            return value
    return None


def set_cookie(token: str) -> tuple[str, str]:
    # __Host-: Secure, Path=/, no Domain, so no other host can plant one.
    return ("Set-Cookie", f"{CSRF_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict")


def form_is_ours(cookie: str | None, field: str | None, origin: str | None,
                 host: str | None) -> bool:
    """The token in the form matches the cookie, and the browser says the page was ours."""
    if not (cookie and field and valid_token(field)):
        return False
    if not hmac.compare_digest(cookie.encode(), field.encode()):
        return False
    # Browsers send Origin on every POST; an absent one (old browser) leaves the token alone.
    return origin is None or (host is not None and origin == f"https://{host}")


# Answers a refused request and writes its "denied" line (the admin app's _deny).
Deny = Callable[[web.Request, str, web.Response], web.Response]


def posted_form(request: web.Request, deny: Deny,
                limit: int = web.MAX_FORM_BYTES) -> dict[str, str] | web.Response:
    """The posted form if it came from our pages, else the answer refusing it."""
    form = request.form(limit)
    if form is None:
        return web.text(413, "form-too-large")
    if not form_is_ours(cookie_token(request.header("Cookie")), form.get(CSRF_FIELD),
                        request.header("Origin"), request.header("Host")):
        return deny(request, "csrf", web.text(403))
    return form
