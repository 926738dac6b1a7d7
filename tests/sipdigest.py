"""Check a SIP digest response the way a phone does (RFC 2617 / RFC 7616: MD5 or SHA-256,
qop=auth or none)."""

from __future__ import annotations

import hashlib
import re

_HASHES = {"MD5": "md5", "SHA-256": "sha256"}


def params(header_value: str) -> dict[str, str]:
    body = header_value.split(None, 1)[1] if header_value.lower().startswith("digest") else ""
    return {k.lower(): v.strip('"') for k, v in
            re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', body)}


def valid(header_value: str, method: str, username: str, password: str) -> bool:
    p = params(header_value)
    if p.get("username") != username:
        return False
    algorithm = _HASHES[p.get("algorithm", "MD5").upper()]

    def h(text: str) -> str:
        return hashlib.new(algorithm, text.encode()).hexdigest()

    ha1 = h(f"{username}:{p['realm']}:{password}")
    ha2 = h(f"{method}:{p['uri']}")
    if p.get("qop"):
        expected = h(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:{p['qop']}:{ha2}")
    else:
        expected = h(f"{ha1}:{p['nonce']}:{ha2}")
    return p.get("response") == expected


def header(message: str, name: str) -> str | None:
    for line in message.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def authorization(challenge: str, method: str, uri: str, username: str, password: str,
                  cnonce: str = "0a4f113b", nc: str = "00000001") -> str:
    """The value of the Authorization/Proxy-Authorization header answering a Digest challenge
    (the value of its WWW-/Proxy-Authenticate header), as a phone writes it."""
    p = params(challenge)
    algorithm = p.get("algorithm", "MD5")

    def h(text: str) -> str:
        return hashlib.new(_HASHES[algorithm.upper()], text.encode()).hexdigest()

    ha1 = h(f"{username}:{p['realm']}:{password}")
    ha2 = h(f"{method}:{uri}")
    fields = [f'username="{username}"', f'realm="{p["realm"]}"', f'nonce="{p["nonce"]}"',
              f'uri="{uri}"', f"algorithm={algorithm}"]
    if "auth" in p.get("qop", "").split(","):
        response = h(f"{ha1}:{p['nonce']}:{nc}:{cnonce}:auth:{ha2}")
        fields += ["qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
    else:
        response = h(f"{ha1}:{p['nonce']}:{ha2}")
    if "opaque" in p:
        fields.append(f'opaque="{p["opaque"]}"')
    return "Digest " + ", ".join([*fields, f'response="{response}"'])
