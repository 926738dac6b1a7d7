"""Grandstream GDMS's Open API as a real local HTTPS server, for tests.

What it checks, as GDMS does (docs/vendors.md cites the sources): the OAuth2 password grant on
``/oapi/oauth/token`` with the password as sha256hex(md5hex(pw)) and the API ID and secret key;
on every ``/oapi/v1.0.0/…`` call the access token and the SHA-256 signature (JSON body hashed in;
a multipart form signed over its sorted fields, a file by its MD5); ``device/add`` takes a list
and refuses a serial number that does not belong to the MAC (error 30010, as seen live);
``device/list`` filters by MAC; ``device/config/xml`` stores the gs_provision document. Answers
are ``{"retCode", "msg", "data"}``. Codes GDMS does not document publicly (a bad signature, a
device of another account) are this fake's own.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fake_vendor import Tls, serving

API = "/oapi/v1.0.0/"
SIGNATURE_ERROR = 40002  # this fake's code: GDMS's own is not public
FOREIGN_ERROR = "30011"  # this fake's code for a device another account holds
FAILURES = ("http500", "malformed", "slow", "revoke")


def _sha(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _canonical(fields: dict[str, str]) -> str:
    return "&" + "&".join(f"{k}={fields[k]}" for k in sorted(fields)) + "&"


def _bare(mac: str) -> str:
    return re.sub(r"[^0-9a-f]", "", mac.lower())


@dataclass
class Call:
    name: str
    mac: str
    answer: str  # "ok", "error" or a scripted failure


@dataclass
class FakeGdms:
    tls: Tls
    username: str = "acme-voip"
    password: str = "gdms-Pa55word"
    client_id: str = "100555"
    client_secret: str = "UYURsdf898fDF3e8f7dusf89dsgfgsdf"
    site_id: int = 675285
    token_seconds: int = 3600
    slow_seconds: float = 2.0
    # The serial number printed on each phone GDMS knows of (MAC, bare lower hex -> SN).
    serials: dict[str, str] = field(default_factory=dict)
    # This account's devices: MAC -> {"sn", "siteId"}; and the config pushed to each.
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    configs: dict[str, bytes] = field(default_factory=dict)
    foreign: set[str] = field(default_factory=set)  # MACs in another account
    tokens: set[str] = field(default_factory=set)
    logins: int = 0
    calls: list[Call] = field(default_factory=list)
    port: int = 0
    _script: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def phone(self, mac: str) -> str:
        """A phone out of the box: its serial number, known to GDMS (ends with the MAC's tail,
        as Grandstream's do)."""
        serial = "20ZE" + secrets.token_hex(4).upper() + _bare(mac)[-4:].upper()
        self.serials[_bare(mac)] = serial
        return serial

    def fail_next(self, failure: str, times: int = 1) -> None:
        assert failure in FAILURES
        with self._lock:
            self._script.extend([failure] * times)

    def config_server(self, mac: str) -> tuple[str, str] | None:
        """(P212, P237) of the config last pushed for the MAC."""
        document = self.configs.get(_bare(mac))
        if document is None:
            return None
        text = document.decode()
        how = re.search(r"<P212>([^<]*)</P212>", text)
        where = re.search(r"<P237>([^<]*)</P237>", text)
        return (how[1] if how else "", where[1] if where else "")

    # The endpoints: (HTTP status, JSON answer).

    def login(self, fields: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if (fields.get("client_id"), fields.get("client_secret")) != (self.client_id,
                                                                      self.client_secret):
            return 401, {"error": "invalid_client", "error_description": "Bad client credentials"}
        expected = _sha(hashlib.md5(self.password.encode(), usedforsecurity=False).hexdigest())
        if fields.get("grant_type") != "password" or fields.get("username") != self.username \
                or fields.get("password") != expected:
            return 400, {"error": "invalid_grant", "error_description": "Bad credentials"}
        token = secrets.token_hex(16)
        with self._lock:
            self.tokens.add(token)
            self.logins += 1
        return 200, {"access_token": token, "refresh_token": secrets.token_hex(16),
                     "token_type": "bearer", "expires_in": self.token_seconds}

    def business(self, name: str, query: dict[str, str], content_type: str,
                 body: bytes) -> tuple[int, dict[str, Any]]:
        with self._lock:
            failure = self._script.pop(0) if self._script else None
            if failure == "revoke":
                self.tokens.clear()
        if failure == "http500":
            self.calls.append(Call(name, "", "http500"))
            return 500, {"error": "Internal Server Error"}
        if failure == "malformed":  # a proxy's error page, or an answer cut short
            self.calls.append(Call(name, "", "malformed"))
            return 200, {"retCode": "0"}
        if failure == "slow":
            time.sleep(self.slow_seconds)
        token = query.get("access_token", "")
        if token not in self.tokens:
            return 401, {"error": "invalid_token", "error_description": "Invalid access token"}
        signed = {"access_token": token, "client_id": self.client_id,
                  "client_secret": self.client_secret, "timestamp": query.get("timestamp", "")}
        if content_type.startswith("multipart/form-data"):
            fields, files = _multipart(content_type, body)
            signed.update(fields)
            signed.update({k: hashlib.md5(v, usedforsecurity=False).hexdigest()
                           for k, v in files.items()})
            expected = _sha(_canonical(signed))
            payload: Any = fields
        else:
            expected = _sha(_canonical(signed) + (_sha(body) + "&" if body else ""))
            try:
                payload = json.loads(body or b"{}")
            except ValueError:
                return 200, {"retCode": 40001, "msg": "invalid parameter", "data": None}
            files = {}
        if query.get("signature") != expected:
            return 200, {"retCode": SIGNATURE_ERROR, "msg": "signature error", "data": None}
        with self._lock:
            return 200, self._run(name, payload, files)

    def _run(self, name: str, payload: Any, files: dict[str, bytes]) -> dict[str, Any]:
        if name == "device/list" and isinstance(payload, dict):
            mac = _bare(str(payload.get("mac", "")))
            rows = [{"mac": ":".join(m[i:i + 2] for i in range(0, 12, 2)).upper(),
                     "sn": d["sn"], "siteId": d["siteId"], "deviceType": "GXP2170",
                     "status": 0, "isSynchronized": int(m in self.configs)}
                    for m, d in sorted(self.devices.items()) if not mac or m == mac]
            self.calls.append(Call(name, mac, "ok"))
            return {"retCode": 0, "msg": "", "data": {"total": len(rows), "pages": 1,
                                                      "result": rows}}
        if name == "device/add" and isinstance(payload, list):
            failed = []
            for item in payload:
                mac = _bare(str(item.get("mac", "")))
                code = (FOREIGN_ERROR if mac in self.foreign else
                        "30010" if self.serials.get(mac) != item.get("sn") else "")
                if code:
                    failed.append({"mac": mac.upper(), "sn": item.get("sn"),
                                   "siteId": item.get("siteId"), "errorMsg": code})
                else:
                    self.devices[mac] = {"sn": item["sn"], "siteId": item.get("siteId")}
                self.calls.append(Call(name, mac, "error" if code else "ok"))
            return {"retCode": 0, "msg": "", "data": {
                "total": len(payload), "success": len(payload) - len(failed),
                "failure": len(failed), "errorDeviceList": failed}}
        if name == "device/config/xml" and isinstance(payload, dict) and "xml" in files:
            mac = _bare(str(payload.get("mac", "")))
            if mac not in self.devices:
                self.calls.append(Call(name, mac, "error"))
                return {"retCode": 10013, "msg": "device does not exist", "data": None}
            self.configs[mac] = files["xml"]
            self.calls.append(Call(name, mac, "ok"))
            return {"retCode": 0, "msg": "", "data": None}
        return {"retCode": 40001, "msg": f"invalid parameter for {name}", "data": None}


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(data, bytes):
            continue
        if part.get_filename():
            files[name] = data
        else:
            fields[name] = data.decode()
    return fields, files


def _handler(fake: FakeGdms) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query))
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            content_type = self.headers.get("Content-Type") or ""
            if parts.path == "/oapi/oauth/token":
                fields = {**query, **dict(parse_qsl(body.decode()))}
                status, answer = fake.login(fields)
            elif parts.path.startswith(API):
                status, answer = fake.business(parts.path[len(API):], query, content_type,
                                               body)
            else:
                status, answer = 404, {"error": "Not Found"}
            data = json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up waiting

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def running(tls: Tls, **kwargs: Any) -> Iterator[FakeGdms]:
    fake = FakeGdms(tls, **kwargs)
    with serving(tls, _handler(fake), "fake-gdms") as port:
        fake.port = port
        yield fake
