"""Snom's redirection service (SRAPS), its documented XML-RPC API (docs/vendors.md):
``redirect.registerPhone(mac, url)``, ``redirect.deregisterPhone(mac)`` and
``redirect.getPhoneRedirection(mac)`` with Basic auth; answers are ``[bool, "message"]`` arrays,
errors such as ``Error:owned_by_other_user``, ``Error:malformed_url``, ``Error:malformed_mac``.

A factory phone gets the plain-port bootstrap file (it may not trust our HTTPS certificate yet),
which points its `setting_server` at its own file on the TLS port.
"""

from __future__ import annotations

import re

from autoprov.config import Settings
from autoprov.redirect.base import Outcome, Result, ServiceSpec, upper_hex
from autoprov.redirect.transport import CallFailedError, XmlRpcEndpoint, call_pair

_ERRORS = (
    (re.compile(r"malformed_mac|invalid mac", re.I), Outcome.INVALID_MAC),
    (re.compile(r"malformed_url|\burl\b", re.I), Outcome.INVALID_URL),
    (re.compile(r"owned_by_other|other user", re.I), Outcome.OWNED_BY_OTHER),
    (re.compile(r"not[ _]found|no redirection|not registered|unknown", re.I), Outcome.NOT_FOUND),
)


def default_phone_url(settings: Settings) -> str:
    """The plain-port bootstrap file; the service writes the phone's MAC for ``{mac}``."""
    return (f"http://{settings.public_host}:{settings.http_port}"
            "/device/autoprov/bootstrap/snom-{mac}.htm")


def _error(message: str) -> Outcome:
    return next((outcome for pattern, outcome in _ERRORS if pattern.search(message)),
                Outcome.REJECTED)


class SnomSraps:
    label = "Snom SRAPS"

    def __init__(self, endpoint: XmlRpcEndpoint, phone_url: str) -> None:
        self._endpoint = endpoint
        self._phone_url = phone_url

    def register(self, mac: str, serial: str = "") -> Result:
        return self._ask(Outcome.REGISTERED, "redirect.registerPhone", upper_hex(mac),
                         self._phone_url)

    def deregister(self, mac: str) -> Result:
        result = self._ask(Outcome.NOT_FOUND, "redirect.deregisterPhone", upper_hex(mac))
        if result.outcome is Outcome.OWNED_BY_OTHER:
            # Not ours to remove, and not pointing at us either: the goal is reached.
            return Result(Outcome.NOT_FOUND, result.message)
        return result

    def check(self, mac: str) -> Result:
        try:
            ok, message = call_pair(self._endpoint, _error, "redirect.getPhoneRedirection",
                                    upper_hex(mac))
        except CallFailedError as exc:
            return exc.result
        if ok:
            return Result(Outcome.REGISTERED, message)
        return Result(_error(message), message)

    def _ask(self, success: Outcome, method: str, *params: str) -> Result:
        try:
            ok, message = call_pair(self._endpoint, _error, method, *params)
        except CallFailedError as exc:
            return exc.result
        if ok:
            return Result(success, message)
        return Result(_error(message), message)


def from_settings(settings: Settings) -> SnomSraps:
    endpoint = XmlRpcEndpoint(
        settings.snom_sraps_url, settings.snom_sraps_user, settings.snom_sraps_password,
        ca_bundle=settings.redirect_ca_bundle, timeout=settings.redirect_timeout_ms / 1000,
    )
    return SnomSraps(endpoint, settings.snom_sraps_phone_url or default_phone_url(settings))


SPEC = ServiceSpec("snom-sraps", SnomSraps.label, "snom_sraps_url", from_settings)
