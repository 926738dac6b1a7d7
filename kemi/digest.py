"""Answering a phone's digest challenge to our NOTIFY (RFC 2617 / RFC 7616).

We compute the Authorization ourselves instead of letting the uac module retry: Kamailio 5.6's
uac shares one callback parameter between the challenged request and its retry and frees it
twice, which corrupts shared memory (fixed upstream in kamailio#4210, after 5.6.3). Doing it here
also means a password never sits in the process-wide $uac_req(apasswd).
"""

from __future__ import annotations

import hashlib
import re
import secrets

_PARAM = re.compile(r'(\w+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]+)')
_HASHES = {"MD5": "md5", "SHA-256": "sha256"}


class UnsupportedChallengeError(ValueError):
    pass


def parse_challenge(header: str) -> dict[str, str]:
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        raise UnsupportedChallengeError(f"not a digest challenge: {scheme}")
    return {k.lower(): v.strip('"') for k, v in _PARAM.findall(rest)}


def authorization(header: str, method: str, uri: str, username: str, password: str,
                  cnonce: str | None = None) -> str:
    """The Authorization (or Proxy-Authorization) value answering challenge `header`."""
    challenge = parse_challenge(header)
    algorithm = challenge.get("algorithm", "MD5").upper()
    if algorithm not in _HASHES or "nonce" not in challenge:
        raise UnsupportedChallengeError(f"cannot answer digest algorithm {algorithm}")

    def h(text: str) -> str:
        return hashlib.new(_HASHES[algorithm], text.encode()).hexdigest()

    realm, nonce = challenge.get("realm", ""), challenge["nonce"]
    ha1 = h(f"{username}:{realm}:{password}")
    ha2 = h(f"{method}:{uri}")
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    fields = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    if qops:
        if "auth" not in qops:
            raise UnsupportedChallengeError(f"cannot answer qop {challenge['qop']}")
        cnonce = cnonce or secrets.token_hex(8)
        nc = "00000001"
        response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        fields += [f'response="{response}"', f"algorithm={algorithm}", f'cnonce="{cnonce}"',
                   "qop=auth", f"nc={nc}"]
    else:
        fields += [f'response="{h(f"{ha1}:{nonce}:{ha2}")}"', f"algorithm={algorithm}"]
    if "opaque" in challenge:
        fields.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(fields)
