"""What the web front (autoprov/front.py) tells the app about a request, as WSGI variables.

The app listens only on unix sockets that nginx's workers alone can reach, and nginx sets the
front's headers on every request it passes on (replacing any a client sent): so here they are
trusted, turned into REMOTE_ADDR, SSL_CLIENT_VERIFY and the verified certificate's subject
values (identity.SUBJECT_VALUES), and removed from the environ.

A request the front refused arrives with its answer in X-Autoprov-Refused: it is logged in the
service's fixed shape, with the client's address, and answered here; the app never sees it.
  denied client=ADDR port=PORT reason=R            (fail2ban's: a hostile request)
  denied client=ADDR port=tls reason=tls-handshake detail=D   (a certificate refused)
  access client=ADDR port=PORT status=429 reason=too-many-connections
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from autoprov import front
from provisioning_wsgi import identity
from provisioning_wsgi.api import app as api_app
from provisioning_wsgi.api import problem

log = logging.getLogger("autoprov.provisioning")


def _key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


_CLIENT, _VERIFY, _SUBJECT, _REFUSED, _REFUSED_URI = (_key(h) for h in (
    front.CLIENT_HEADER, front.VERIFY_HEADER, front.SUBJECT_HEADER, front.REFUSED_HEADER,
    front.REFUSED_URI_HEADER))
_REASONS = {400: ("Bad Request", "bad-request"), 403: ("Forbidden", "tls-handshake"),
            413: ("Content Too Large", "body-too-large"),
            414: ("URI Too Long", "request-line-too-long"),
            429: ("Too Many Requests", "too-many-connections"),
            431: ("Request Header Fields Too Large", "header-too-large")}


def token(text: str) -> str:
    """Text as one log token: "certificate has expired" -> "certificate-has-expired"."""
    return "-".join("".join(c if c.isalnum() else " " for c in text).split()).lower() or "-"


class BehindFront:
    """Wraps the app of one port (label: bootstrap, tls or admin)."""

    def __init__(self, app: WSGIApplication, label: str) -> None:
        self.app = app
        self.label = label

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        client = environ.pop(_CLIENT, None) or "-"
        verify = environ.pop(_VERIFY, None) or "NONE"
        subject = environ.pop(_SUBJECT, None) or ""
        refused = environ.pop(_REFUSED, None)
        refused_uri = environ.pop(_REFUSED_URI, None) or ""
        environ["REMOTE_ADDR"] = client
        if refused:
            return self._refuse(int(refused), client, verify, refused_uri, start_response)
        if self.label != "bootstrap":
            environ["HTTPS"] = "on"
        if self.label == "tls":
            environ["SSL_CLIENT_VERIFY"] = verify
            if verify == "SUCCESS":
                environ[identity.SUBJECT_VALUES] = identity.dn_values(subject)
        return self.app(environ, start_response)

    def _refuse(self, status: int, client: str, verify: str, uri: str,
                start_response: StartResponse) -> Iterable[bytes]:
        phrase, reason = _REASONS.get(status, ("Bad Request", "bad-request"))
        if status == 403:
            # nginx: FAILED:certificate has expired; NONE when the phone sent none.
            detail = verify.partition(":")[2] if verify.startswith("FAILED:") else \
                "peer did not return a certificate"
            log.warning("denied client=%s port=%s reason=tls-handshake detail=%s", client,
                        self.label, token(detail))
        elif status == 429:
            # Not fail2ban's: a site's phones behind one NAT share an address.
            log.info("access client=%s port=%s status=429 reason=%s", client, self.label, reason)
        else:
            log.warning("denied client=%s port=%s reason=%s", client, self.label, reason)
        if self.label == "admin" and uri.startswith(api_app.PREFIX + "/"):
            # An API client reads every error as problem+json, also one the front made.
            error = problem.ApiError(status, reason, f"refused by the web front: {reason}")
            return error.response().send(start_response, "GET")
        body = f"{status} {phrase.lower()}\n".encode()
        start_response(f"{status} {phrase}", [("Content-Type", "text/plain; charset=utf-8"),
                                             ("Content-Length", str(len(body)))])
        return [body]
