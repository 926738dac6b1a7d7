"""A small SIP user agent over UDP for tests that need to read and write SDP while a call is up
(sipp scenarios cannot hand an SDP port to the test mid-call): REGISTER and INVITE with digest,
answers, ACK and BYE along the Record-Route."""

from __future__ import annotations

import re
import secrets
import socket
import time
from dataclasses import dataclass, field

from tests import sipdigest


def sdp(address: str, port: int) -> str:
    return (f"v=0\r\no=- 1 1 IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def media_of(message: str) -> tuple[str, int]:
    """(address, port) of the audio stream in a message's SDP."""
    address = re.search(r"^c=IN IP4 (\S+)", message, re.M)
    port = re.search(r"^m=audio (\d+)", message, re.M)
    assert address and port, message
    return address.group(1), int(port.group(1))


def body_of(message: str) -> str:
    return message.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in message else ""


def status_of(message: str) -> int:
    return int(message.split(" ", 2)[1]) if message.startswith("SIP/2.0 ") else 0


@dataclass
class UserAgent:
    user: str
    domain: str
    password: str
    proxy: tuple[str, int]
    local_ip: str = "127.0.0.1"
    # The address it writes in Contact (behind NAT: a private one, not where it sends from).
    contact_host: str = ""
    sock: socket.socket = field(init=False, repr=False)
    cseq: int = field(default=0, init=False)
    last_via: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.local_ip, 0))
        self.port = self.sock.getsockname()[1]
        self.contact_host = self.contact_host or self.local_ip
        self.tag = secrets.token_hex(4)

    def close(self) -> None:
        self.sock.close()

    @property
    def contact(self) -> str:
        port = 5060 if self.contact_host != self.local_ip else self.port
        return f"<sip:{self.user}@{self.contact_host}:{port}>"

    def send(self, text: str, to: tuple[str, int] | None = None) -> None:
        self.sock.sendto(text.encode(), to or self.proxy)

    def receive(self, timeout: float = 5.0, skip_provisional: bool = False) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.user}: nothing received in {timeout}s")
            self.sock.settimeout(remaining)
            message = self.sock.recv(65535).decode(errors="replace")
            if skip_provisional and 100 <= status_of(message) < 200:
                continue
            return message

    def _via(self) -> str:
        return (f"Via: SIP/2.0/UDP {self.local_ip}:{self.port};"
                f"branch=z9hG4bK{secrets.token_hex(6)};rport")

    def request(self, method: str, uri: str, call_id: str, to: str, *extra: str,
                body: str = "", cseq: int | None = None, via: str = "") -> str:
        """A request; `via` given (the ACK of a non-2xx): in that transaction."""
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        self.last_via = via or self._via()
        lines = [f"{method} {uri} SIP/2.0", self.last_via,
                 f"From: <sip:{self.user}@{self.domain}>;tag={self.tag}", f"To: {to}",
                 f"Call-ID: {call_id}", f"CSeq: {cseq} {method}", f"Contact: {self.contact}",
                 "Max-Forwards: 70", *extra]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    def authenticated(self, method: str, uri: str, call_id: str, to: str, *extra: str,
                      body: str = "") -> str:
        """Send a request, answer a 401/407 with credentials; the final (or 1xx) answer."""
        self.send(self.request(method, uri, call_id, to, *extra, body=body))
        answer = self.receive(skip_provisional=True)
        if status_of(answer) not in (401, 407):
            return answer
        if method == "INVITE":  # a final answer to an INVITE is ACKed in its transaction
            self.send(self.request("ACK", uri, call_id, sipdigest.header(answer, "To") or to,
                                   cseq=self.cseq, via=self.last_via))
        name = "WWW-Authenticate" if status_of(answer) == 401 else "Proxy-Authenticate"
        challenge = sipdigest.header(answer, name)
        assert challenge, answer
        credentials = sipdigest.authorization(challenge, method, uri, self.user, self.password)
        header = "Authorization" if status_of(answer) == 401 else "Proxy-Authorization"
        self.send(self.request(method, uri, call_id, to, f"{header}: {credentials}", *extra,
                               body=body))
        return self.receive(skip_provisional=method != "INVITE")

    def register(self, expires: int = 300) -> str:
        uri = f"sip:{self.domain}"
        return self.authenticated("REGISTER", uri, secrets.token_hex(8),
                                  f"<sip:{self.user}@{self.domain}>", f"Expires: {expires}")

    def reply(self, request: str, status: int, reason: str, to_tag: str = "",
              body: str = "", extra: tuple[str, ...] = ()) -> None:
        """Answer a request received, copying Via, Record-Route, From, To (tagged), Call-ID."""
        lines = [f"SIP/2.0 {status} {reason}"]
        for line in request.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
            name = line.split(":", 1)[0].strip().lower()
            if name in ("via", "record-route", "from", "call-id", "cseq"):
                lines.append(line)
            elif name == "to":
                lines.append(line + (f";tag={to_tag}" if to_tag and "tag=" not in line else ""))
        lines.append(f"Contact: {self.contact}")
        lines += extra
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        self.send("\r\n".join(lines) + "\r\n\r\n" + body)


def route_set(reply: str) -> list[str]:
    """The Record-Route of a 2xx, reversed: the caller's Route for the dialog."""
    routes: list[str] = []
    for line in reply.split("\r\n\r\n", 1)[0].split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "record-route":
            routes += [r.strip() for r in value.split(",")]
    return list(reversed(routes))


def contact_uri(message: str) -> str:
    value = sipdigest.header(message, "Contact") or ""
    match = re.search(r"<([^>]+)>", value)
    return match.group(1) if match else value.strip()
