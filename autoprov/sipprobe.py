"""A SIP OPTIONS probe: is the proxy answering on this socket? (readiness checks, tests)"""

from __future__ import annotations

import secrets
import socket


def parse_listen(address: str) -> tuple[str, str, int]:
    """'udp:127.0.0.1:5060' -> ('udp', '127.0.0.1', 5060)."""
    proto, rest = address.split(":", 1)
    host, port = rest.rsplit(":", 1)
    return proto.lower(), host.strip("[]"), int(port)


def _uri_host(host: str) -> str:
    """An IPv6 address in a SIP URI or Via is written in brackets."""
    return f"[{host}]" if ":" in host else host


def options(proto: str, host: str, port: int, timeout: float = 2.0) -> tuple[int, str]:
    """Send one OPTIONS and return (status code, reason) of the reply."""
    branch = "z9hG4bK" + secrets.token_hex(8)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family,
                       socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        local_host, local_port = sock.getsockname()[:2]
        here, there = _uri_host(local_host), _uri_host(host)
        message = (
            f"OPTIONS sip:{there}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/{proto.upper()} {here}:{local_port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{here}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{there}:{port}>\r\n"
            f"Call-ID: {secrets.token_hex(12)}@autoprov-probe\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendall(message.encode())
        data = sock.recv(65535)
    status_line = data.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("SIP/2.0") or not parts[1].isdigit():
        raise ValueError(f"not a SIP reply: {status_line!r}")
    return int(parts[1]), parts[2] if len(parts) > 2 else ""
