"""Yealink RPS, the legacy XML-RPC API (vendor-protocols.md §4.1).

Two steps: ``redirect.addServer(name, url)`` names our bootstrap URL once, then each MAC is bound
to that name. Answers are ``[bool, "message"]`` arrays rather than faults; a false one is an
error (ngcp-panel ignored them, so its Yealink failures went unnoticed).
"""

from __future__ import annotations

import hashlib
import re

from autoprov.config import Settings
from autoprov.redirect.base import Outcome, Result, ServiceSpec, upper_hex
from autoprov.redirect.transport import CallFailedError, XmlRpcEndpoint, call_pair

# First match wins: "Error:Invalid MAC(s):…" must not be read as an account id.
_ERRORS = (
    (re.compile(r"invalid mac", re.I), Outcome.INVALID_MAC),
    (re.compile(r"\burl\b", re.I), Outcome.INVALID_URL),
    (re.compile(r"registered elsewhere|other user|owned", re.I), Outcome.OWNED_BY_OTHER),
    # A bare account id: the MAC belongs to that account (Falconieri's ParseProviderError).
    (re.compile(r"^error:\s*[a-z0-9]{10}$", re.I), Outcome.OWNED_BY_OTHER),
    (re.compile(r"unregistered|not exist|not found", re.I), Outcome.NOT_FOUND),
)
_SERVER_GONE = re.compile(r"invalid server", re.I)
_SERVER_EXISTS = re.compile(r"existed|exists", re.I)


def default_server_url(settings: Settings) -> str:
    """The plain-HTTP bootstrap base: a factory-reset Yealink does not trust our HTTPS
    certificate yet, so it first gets the generic config there (handbook A.6.3.1)."""
    return f"http://{settings.public_host}:{settings.http_port}/device/autoprov/bootstrap/"


def server_name(url: str) -> str:
    """A stable name for the URL; RPS allows at most 20 of 'A-z 0-9 - _ .'."""
    return hashlib.md5(url.encode(), usedforsecurity=False).hexdigest()[:20]


def _error(message: str) -> Outcome:
    return next((outcome for pattern, outcome in _ERRORS if pattern.search(message)),
                Outcome.REJECTED)


class YealinkRps:
    label = "Yealink RPS"

    def __init__(self, endpoint: XmlRpcEndpoint, server_url: str) -> None:
        self._endpoint = endpoint
        self._server_url = server_url
        self._server = server_name(server_url)
        self._server_added = False

    def register(self, mac: str, serial: str = "") -> Result:
        try:
            if not self._server_added:
                added = self._add_server()
                if added is not None:
                    return added
            ok, message = self._call("redirect.registerDevice", upper_hex(mac), self._server,
                                     "1")
        except CallFailedError as exc:
            return exc.result
        if ok:
            return Result(Outcome.REGISTERED, message)
        if _SERVER_GONE.search(message):
            # Someone deleted our server entry at Yealink: add it again on the next attempt.
            self._server_added = False
            return Result(Outcome.TEMPORARY, message)
        return Result(_error(message), message)

    def deregister(self, mac: str) -> Result:
        try:
            ok, message = self._call("redirect.deRegisterDevice", upper_hex(mac))
        except CallFailedError as exc:
            return exc.result
        if ok:
            return Result(Outcome.NOT_FOUND, message)
        # What RPS answers for a MAC it has no entry for is undocumented: ask before failing.
        checked = self.check(mac)
        if checked.outcome in (Outcome.NOT_FOUND, Outcome.OWNED_BY_OTHER):
            return Result(Outcome.NOT_FOUND, f"{message} (checkDevice: {checked.message})")
        if checked.outcome.temporary:
            return checked
        outcome = _error(message)
        return Result(Outcome.REJECTED if outcome is Outcome.NOT_FOUND else outcome, message)

    def check(self, mac: str) -> Result:
        try:
            ok, message = self._call("redirect.checkDevice", upper_hex(mac))
        except CallFailedError as exc:
            return exc.result
        state = message.strip().lower()
        if ok and state == "registered":
            return Result(Outcome.REGISTERED, message)
        if state == "registered elsewhere":
            return Result(Outcome.OWNED_BY_OTHER, message)
        if state in ("unregistered", "unknown"):
            return Result(Outcome.NOT_FOUND, message)
        return Result(_error(message), message)

    def _add_server(self) -> Result | None:
        """None once the server entry exists, else why it could not be made."""
        ok, message = self._call("redirect.addServer", self._server, self._server_url)
        if ok or _SERVER_EXISTS.search(message):
            self._server_added = True
            return None
        return Result(_error(message), f"addServer {self._server_url}: {message}")

    def _call(self, method: str, *params: str) -> tuple[bool, str]:
        return call_pair(self._endpoint, _error, method, *params)


def from_settings(settings: Settings) -> YealinkRps:
    endpoint = XmlRpcEndpoint(
        settings.yealink_rps_url, settings.yealink_rps_user, settings.yealink_rps_password,
        ca_bundle=settings.redirect_ca_bundle, timeout=settings.redirect_timeout_ms / 1000,
    )
    return YealinkRps(endpoint, settings.yealink_rps_server_url or default_server_url(settings))


SPEC = ServiceSpec("yealink-rps", YealinkRps.label, "yealink_rps_url", from_settings)
