"""Panasonic's redirect server ("RCS", vendor-protocols.md §4.4): ``ipredirect.*`` over
XML-RPC. Success is a boolean true or a struct; errors are XML-RPC faults."""

from __future__ import annotations

import re
import xmlrpc.client
from typing import Any

from autoprov.config import Settings
from autoprov.redirect.base import Outcome, Result, ServiceSpec, upper_hex
from autoprov.redirect.transport import CallFailedError, XmlRpcEndpoint

# Fault codes as peoplefone/provisioning-rpc maps them (203 is from the spec's samples).
_FAULT_CODES = {
    100: Outcome.INVALID_URL,
    200: Outcome.INVALID_MAC,
    201: Outcome.NOT_FOUND,
    202: Outcome.OWNED_BY_OTHER,
    203: Outcome.OWNED_BY_OTHER,
}
# Sources disagree on the codes (the spec's sample has 201 "…:Invalid MAC address"), so an
# unambiguous fault text wins over the code.
_FAULT_WORDS = (
    (re.compile(r"invalid mac", re.I), Outcome.INVALID_MAC),
    (re.compile(r"not (the )?owner|other (user|account)", re.I), Outcome.OWNED_BY_OTHER),
    (re.compile(r"invalid (provisioning )?url", re.I), Outcome.INVALID_URL),
)


def default_phone_url(settings: Settings) -> str:
    """The TLS config URL; the service substitutes the phone's MAC for ``{MAC}``."""
    return (f"https://{settings.public_host}:{settings.https_port}"
            "/device/autoprov/config/Config{MAC}.cfg")


def _fault_outcome(fault: xmlrpc.client.Fault) -> Outcome:
    text = str(fault.faultString)
    for pattern, outcome in _FAULT_WORDS:
        if pattern.search(text):
            return outcome
    return _FAULT_CODES.get(fault.faultCode, Outcome.REJECTED)


class PanasonicRcs:
    label = "Panasonic RCS"

    def __init__(self, endpoint: XmlRpcEndpoint, phone_url: str) -> None:
        self._endpoint = endpoint
        self._phone_url = phone_url

    def register(self, mac: str, serial: str = "") -> Result:
        return self._ask(Outcome.REGISTERED, "ipredirect.registerPhone", upper_hex(mac),
                         self._phone_url)

    def deregister(self, mac: str) -> Result:
        result = self._ask(Outcome.NOT_FOUND, "ipredirect.unregisterPhone", upper_hex(mac))
        if result.outcome is Outcome.OWNED_BY_OTHER:
            # Not ours to remove, and not pointing at us either: the goal is reached.
            return Result(Outcome.NOT_FOUND, result.message)
        return result

    def check(self, mac: str) -> Result:
        try:
            answer: Any = self._endpoint.call("ipredirect.getPhone", upper_hex(mac))
        except xmlrpc.client.Fault as fault:
            return self._fault(fault)
        except CallFailedError as exc:
            return exc.result
        if isinstance(answer, dict):
            return Result(Outcome.REGISTERED, str(answer.get("url", "")))
        return Result(Outcome.REJECTED, f"getPhone: unexpected answer {str(answer)[:200]!r}")

    def _ask(self, success: Outcome, method: str, *params: str) -> Result:
        try:
            answer: Any = self._endpoint.call(method, *params)
        except xmlrpc.client.Fault as fault:
            return self._fault(fault)
        except CallFailedError as exc:
            return exc.result
        if answer is True:
            return Result(success, "OK")
        return Result(Outcome.REJECTED, f"{method}: unexpected answer {str(answer)[:200]!r}")

    def _fault(self, fault: xmlrpc.client.Fault) -> Result:
        text = self._endpoint.scrub(f"{fault.faultString} (fault {fault.faultCode})")
        return Result(_fault_outcome(fault), text)


def from_settings(settings: Settings) -> PanasonicRcs:
    endpoint = XmlRpcEndpoint(
        settings.panasonic_rcs_url, settings.panasonic_rcs_user, settings.panasonic_rcs_password,
        ca_bundle=settings.redirect_ca_bundle, timeout=settings.redirect_timeout_ms / 1000,
    )
    return PanasonicRcs(endpoint,
                        settings.panasonic_rcs_phone_url or default_phone_url(settings))


SPEC = ServiceSpec("panasonic-rcs", PanasonicRcs.label, "panasonic_rcs_url", from_settings)
