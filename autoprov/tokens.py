"""The REST API's bearer tokens (table autoprov.api_token): `autoprov token ...` and lookups.

A token is 32 random bytes; only its sha256 is stored. High entropy makes a fast hash enough,
and an exact hash lets a request find its row with an index instead of trying every token.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

Conn = psycopg.Connection[Any]
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class TokenError(ValueError):
    """A token command that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class Holder:
    """Who a request's token belongs to."""
    name: str
    read_only: bool


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def create(conn: Conn, name: str, read_only: bool = False) -> str:
    """A new token for NAME; the only time it exists in clear."""
    if not _NAME.match(name):
        raise TokenError(f"invalid token name {name!r}: 1 to 64 of A-Z a-z 0-9 . _ -")
    token = secrets.token_urlsafe(32)
    try:
        with conn.transaction():
            conn.execute("INSERT INTO autoprov.api_token (name, hash, read_only)"
                         " VALUES (%s, %s, %s)", (name, digest(token), read_only))
    except psycopg.errors.UniqueViolation:
        raise TokenError(f"a token named {name!r} exists (revoked ones keep their name)") \
            from None
    return token


def listing(conn: Conn) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute("SELECT name, read_only, revoked, created_at, last_used_at"
                           "  FROM autoprov.api_token ORDER BY name").fetchall()
    return [dict(row) for row in rows]


def revoke(conn: Conn, name: str) -> None:
    with conn.transaction():
        done = conn.execute("UPDATE autoprov.api_token SET revoked = true"
                            " WHERE name = %s AND NOT revoked", (name,)).rowcount
    if not done:
        raise TokenError(f"no live token named {name!r}")


def holder(conn: Conn, token: str) -> Holder | None:
    """Whose live token this is (and note its use), or None."""
    row = conn.execute("UPDATE autoprov.api_token SET last_used_at = now()"
                       " WHERE hash = %s AND NOT revoked RETURNING name, read_only",
                       (digest(token),)).fetchone()
    return Holder(str(row[0]), bool(row[1])) if row else None
