"""Grandstream GDMS, its Open API (docs/vendors.md lists the sources and what is unverified).

A factory-reset Grandstream asks Grandstream's own server, which hands it the config GDMS holds
for its MAC. So registering a MAC here is: the device in our GDMS account (``device/add``, by
MAC *and* serial number, which GDMS checks against each other), then a config for it whose P237
(config server path) and P212 (how to fetch it) are ours (``device/config/xml``). GDMS's API
documents no device delete: deregistering points P237 back at Grandstream's factory value, so
the phone no longer comes to us; the device stays listed in the account.

Authentication: OAuth2 password grant on ``/oapi/oauth/token`` (the password as
sha256hex(md5hex(password))), then every call carries ``access_token``, ``timestamp`` (ms) and
``signature`` = sha256hex of ``&access_token=…&client_id=…&client_secret=…&timestamp=…&`` plus
``sha256hex(body)&`` for a JSON body; a multipart form is signed over its sorted fields, a file
by the MD5 of its bytes. Answers are ``{"retCode": 0, "msg": …, "data": …}``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import requests

from autoprov.config import Settings
from autoprov.mac import colon_form
from autoprov.redirect.base import Outcome, Result, ServiceSpec
from autoprov.redirect.transport import CallFailedError, check_status, post

API = "/oapi/v1.0.0/"
LOGIN_PATH = "/oapi/oauth/token"
# What a Grandstream ships with: its redirection server (GAPS) over HTTPS.
FACTORY_CONFIG_SERVER = "https://fm.grandstream.com/gs"
TOKEN_MARGIN_S = 60.0  # a token this close to its end is renewed before use
# A device GDMS refused in device/add, by the code in its errorDeviceList (seen live).
_ADD_ERRORS = {"30010": (Outcome.REJECTED, "the serial number does not belong to this MAC")}


def sha256_hex(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def login_password(password: str) -> str:
    """The password as GDMS's token endpoint takes it: sha256hex(md5hex(password))."""
    return sha256_hex(hashlib.md5(password.encode(), usedforsecurity=False).hexdigest())


def signature(fields: dict[str, str], body: bytes = b"") -> str:
    """sha256hex("&k=v&…&" over the fields sorted by name, then sha256hex(body)& if any)."""
    canonical = "&" + "&".join(f"{k}={fields[k]}" for k in sorted(fields)) + "&"
    if body:
        canonical += sha256_hex(body) + "&"
    return sha256_hex(canonical)


def provisioning_xml(config_server: str) -> bytes:
    """A gs_provision document setting where the phone fetches its config: P212 (1 HTTP,
    2 HTTPS) and P237 (host[:port]/path, without the scheme)."""
    parts = urlsplit(config_server)
    how = "2" if parts.scheme == "https" else "1"
    path = escape(parts.netloc + parts.path.rstrip("/"))
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<gs_provision version="1">\n'
            f'<config version="1">\n<P212>{how}</P212>\n<P237>{path}</P237>\n'
            f"</config>\n</gs_provision>\n").encode()


def default_config_server(settings: Settings) -> str:
    """The plain-port bootstrap: a factory phone may not trust our HTTPS certificate yet; its
    bootstrap file (cfg<mac>.xml) then points it at the TLS port."""
    return f"http://{settings.public_host}:{settings.http_port}/device/autoprov/bootstrap"


@dataclass
class _Token:
    value: str
    until: float


class GdmsClient:
    """The signed JSON and multipart calls, with the token kept and renewed."""

    def __init__(self, url: str, username: str, password: str, client_id: str,
                 client_secret: str, *, ca_bundle: str = "", timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._username = username
        self._password = password
        self._client_id = client_id
        self._secret = client_secret
        self._timeout = timeout
        self._token: _Token | None = None
        self._session = requests.Session()
        self._session.trust_env = False  # neither proxies nor REQUESTS_CA_BUNDLE from the env
        self._session.verify = ca_bundle or True

    def call(self, name: str, payload: Any) -> Any:
        """POST a JSON body to API + name; the answer's ``data``."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        return self._signed(name, body=body)

    def upload(self, name: str, fields: dict[str, str], files: dict[str, bytes]) -> Any:
        """POST a multipart form (signed over its fields, a file by its MD5)."""
        return self._signed(name, fields=fields, files=files)

    def scrub(self, text: str) -> str:
        for secret in (self._password, self._secret):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _signed(self, name: str, *, body: bytes = b"", fields: dict[str, str] | None = None,
                files: dict[str, bytes] | None = None) -> Any:
        for attempt in (1, 2):
            token = self._access_token()
            query = {"access_token": token, "timestamp": str(int(time.time() * 1000))}
            signed = {**query, "client_id": self._client_id, "client_secret": self._secret}
            if files is not None:
                signed.update(fields or {})
                signed.update({k: hashlib.md5(v, usedforsecurity=False).hexdigest()
                               for k, v in files.items()})
                query["signature"] = signature(signed)
                response = self._post(API + name, params=query, data=fields,
                                      files={k: (f"{k}.xml", v, "text/xml")
                                             for k, v in files.items()})
            else:
                query["signature"] = signature(signed, body)
                response = self._post(API + name, params=query, data=body,
                                      headers={"Content-Type": "application/json"})
            if response.status_code == 401 and attempt == 1:
                self._token = None  # expired or revoked early: log in again, once
                continue
            return self._data(name, response)
        raise AssertionError("unreachable")

    def _access_token(self) -> str:
        if self._token is not None and time.monotonic() < self._token.until:
            return self._token.value
        response = self._post(LOGIN_PATH, data={
            "username": self._username, "password": login_password(self._password),
            "grant_type": "password", "client_id": self._client_id,
            "client_secret": self._secret})
        answer = self._json(response) if response.status_code < 500 else None
        if response.status_code in (400, 401, 403) or (
                isinstance(answer, dict) and "error" in answer):
            words = answer.get("error_description") or answer.get("error") \
                if isinstance(answer, dict) else ""
            raise self._failed(Outcome.AUTH_FAILED, f"GDMS login refused: HTTP "
                               f"{response.status_code} {words or response.reason}".strip())
        check_status(response, self._failed, "access token refused")
        if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
            raise self._failed(Outcome.TEMPORARY, "GDMS login: no access_token in the answer")
        lifetime = answer.get("expires_in")
        seconds = float(lifetime) if isinstance(lifetime, int | float) else 3600.0
        self._token = _Token(answer["access_token"],
                             time.monotonic() + max(0.0, seconds - TOKEN_MARGIN_S))
        return self._token.value

    def _post(self, path: str, **kwargs: Any) -> requests.Response:
        return post(self._session, self.url + path, self._timeout, self._failed, **kwargs)

    def _data(self, name: str, response: requests.Response) -> Any:
        check_status(response, self._failed, "access token refused")
        answer = self._json(response)
        if not isinstance(answer, dict) or not isinstance(answer.get("retCode"), int):
            raise self._failed(Outcome.TEMPORARY, f"{name}: malformed answer")
        if answer["retCode"] != 0:
            raise self._failed(Outcome.REJECTED, f"{name}: {answer.get('msg') or 'refused'}"
                               f" (retCode {answer['retCode']})")
        return answer.get("data")

    def _json(self, response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            return None

    def _failed(self, outcome: Outcome, message: str) -> CallFailedError:
        return CallFailedError(Result(outcome, self.scrub(message)))


class GrandstreamGdms:
    label = "Grandstream GDMS"

    def __init__(self, client: GdmsClient, site_id: int, config_server: str) -> None:
        self._client = client
        self._site_id = site_id
        self._config = provisioning_xml(config_server)
        self._factory = provisioning_xml(FACTORY_CONFIG_SERVER)

    def register(self, mac: str, serial: str = "") -> Result:
        if not serial:
            return Result(Outcome.REJECTED, "no serial number: GDMS adds a device by MAC and "
                          "serial number (autoprov device add --serial, or SQL: "
                          "UPDATE autoprov.device SET serial_number = ...)")
        if self._site_id <= 0:
            return Result(Outcome.REJECTED, "gdms_site_id is not set: GDMS adds a device to "
                          "a site")
        try:
            listed = self._listed(mac)
            if listed is None:
                refused = self._add(mac, serial)
                if refused is not None:
                    return refused
            self._push(mac, self._config)
        except CallFailedError as exc:
            return exc.result
        return Result(Outcome.REGISTERED, "in the GDMS account, config server pushed")

    def deregister(self, mac: str) -> Result:
        try:
            if self._listed(mac) is None:
                return Result(Outcome.NOT_FOUND, "not in the GDMS account")
            self._push(mac, self._factory)
        except CallFailedError as exc:
            return exc.result
        return Result(Outcome.NOT_FOUND, "config server set back to Grandstream's "
                      f"({FACTORY_CONFIG_SERVER}); the device stays listed in GDMS")

    def check(self, mac: str) -> Result:
        try:
            row = self._listed(mac)
        except CallFailedError as exc:
            return exc.result
        if row is None:
            return Result(Outcome.NOT_FOUND, "not in the GDMS account")
        return Result(Outcome.REGISTERED, f"in the GDMS account, site {row.get('siteId')}")

    def _listed(self, mac: str) -> dict[str, Any] | None:
        """The account's device row for the MAC; GDMS shows no other account's devices."""
        data = self._client.call("device/list", {"mac": colon_form(mac).upper(),
                                                 "pageNum": 1, "pageSize": 10})
        rows = data.get("result") if isinstance(data, dict) else None
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict) and _bare(str(row.get("mac", ""))) == mac:
                return row
        return None

    def _add(self, mac: str, serial: str) -> Result | None:
        """None once GDMS took the device, else why not."""
        data = self._client.call("device/add", [{"mac": colon_form(mac).upper(), "sn": serial,
                                                 "siteId": self._site_id}])
        failed = data.get("errorDeviceList") if isinstance(data, dict) else None
        for row in failed if isinstance(failed, list) else []:
            if isinstance(row, dict) and _bare(str(row.get("mac", ""))) == mac:
                code = str(row.get("errorMsg", ""))
                outcome, words = _ADD_ERRORS.get(code, (Outcome.REJECTED, "refused"))
                return Result(outcome, f"device/add: {words} (GDMS error {code})")
        return None

    def _push(self, mac: str, document: bytes) -> None:
        self._client.upload("device/config/xml", {"mac": colon_form(mac).upper()},
                            {"xml": document})


def _bare(mac: str) -> str:
    return "".join(c for c in mac.lower() if c in "0123456789abcdef")


def from_settings(settings: Settings) -> GrandstreamGdms:
    client = GdmsClient(settings.gdms_url, settings.gdms_username, settings.gdms_password,
                        settings.gdms_client_id, settings.gdms_client_secret,
                        ca_bundle=settings.redirect_ca_bundle,
                        timeout=settings.redirect_timeout_ms / 1000)
    return GrandstreamGdms(client, settings.gdms_site_id,
                           settings.gdms_config_server or default_config_server(settings))


SPEC = ServiceSpec("grandstream-gdms", GrandstreamGdms.label, "gdms_url", from_settings)
