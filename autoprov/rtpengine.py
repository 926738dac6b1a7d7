"""The media relay (setting rtpengine_socket): running rtpengine from autoprov's configuration,
and its ng control protocol (bencoded dictionaries over UDP) for readiness probes and checks."""

from __future__ import annotations

import secrets
import socket
from typing import Any

from autoprov import sipprobe
from autoprov.config import Settings

NG_TIMEOUT = 2.0
# rtpengine frees a session this long after its last RTP packet (a phone that vanished without
# BYE), and an offer nobody answered after offer_timeout.
MEDIA_TIMEOUT_S = 60
OFFER_TIMEOUT_S = 120


class NgError(RuntimeError):
    """rtpengine did not answer, or answered with an error."""


def control_address(settings: Settings) -> tuple[str, int]:
    """("127.0.0.1", 2223) from "udp:127.0.0.1:2223"."""
    _proto, host, port = sipprobe.parse_listen(settings.rtpengine_socket)
    return host, port


def media_address(settings: Settings) -> str:
    """Where rtpengine relays media: rtpengine_interface, else the first SIP socket's address."""
    if settings.rtpengine_interface:
        return settings.rtpengine_interface
    _proto, host, _port = sipprobe.parse_listen(settings.sip_listen[0])
    return host


def command(settings: Settings, binary: str = "rtpengine") -> list[str]:
    """rtpengine in the foreground, in user space (no kernel module), logging to stderr."""
    host, port = control_address(settings)
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return [
        binary, "--foreground", "--log-stderr", "--config-file=none", "--table=-1",
        f"--interface={media_address(settings)}", f"--listen-ng={listen}",
        f"--port-min={settings.rtpengine_port_min}", f"--port-max={settings.rtpengine_port_max}",
        f"--timeout={MEDIA_TIMEOUT_S}", f"--offer-timeout={OFFER_TIMEOUT_S}",
        "--delete-delay=0",
        # A phone's RTP from where its SDP said is taken at once; from elsewhere (NAT) its first
        # packets teach rtpengine where it really is.
        "--endpoint-learning=heuristic",
        "--log-level=5",  # notices and worse: not a few lines per call
    ]


def bencode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, str):
        return bencode(value.encode())
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, list | tuple):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    value, end = _decode(data, 0)
    if end != len(data):
        raise ValueError("trailing bytes after the bencoded value")
    return value


def _decode(data: bytes, at: int) -> tuple[Any, int]:
    kind = data[at:at + 1]
    if kind == b"i":
        end = data.index(b"e", at)
        return int(data[at + 1:end]), end + 1
    if kind in (b"l", b"d"):
        items: list[Any] = []
        at += 1
        while data[at:at + 1] != b"e":
            item, at = _decode(data, at)
            items.append(item)
        if kind == b"l":
            return items, at + 1
        keys = [k.decode() if isinstance(k, bytes) else k for k in items[::2]]
        return dict(zip(keys, items[1::2], strict=True)), at + 1
    colon = data.index(b":", at)
    length = int(data[at:colon])
    start = colon + 1
    if length < 0 or start + length > len(data):
        raise ValueError("bencoded string runs past the end")
    return data[start:start + length], start + length


def ng(settings: Settings, command_name: str, timeout: float = NG_TIMEOUT,
       **params: Any) -> dict[str, Any]:
    """One ng command (e.g. "ping", "list", "query" with call_id) and its answer."""
    host, port = control_address(settings)
    cookie = secrets.token_hex(6).encode()
    request = {"command": command_name, **{k.replace("_", "-"): v for k, v in params.items()}}
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(cookie + b" " + bencode(request), (host, port))
        try:
            while True:
                data = sock.recv(65535)
                got_cookie, _, body = data.partition(b" ")
                if got_cookie == cookie:
                    break
        except TimeoutError:
            raise NgError(f"rtpengine at {host}:{port} did not answer {command_name!r}") from None
    answer = bdecode(body)
    if not isinstance(answer, dict) or answer.get("result") == b"error":
        reason = answer.get("error-reason", b"?") if isinstance(answer, dict) else b"?"
        raise NgError(f"rtpengine {command_name!r}: {reason.decode(errors='replace')}")
    return answer


def probe(settings: Settings) -> str | None:
    """None when rtpengine answers a ping, else what is wrong (readiness checks)."""
    try:
        answer = ng(settings, "ping", timeout=1.0)
    except (OSError, NgError, ValueError) as exc:
        return str(exc)
    return None if answer.get("result") == b"pong" else f"rtpengine answered {answer!r}"
