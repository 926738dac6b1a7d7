"""A device's redirect registration as operators see it (`autoprov device show`)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from autoprov.mac import normalize
from autoprov.redirect.base import Outcome


def fragment(conn: psycopg.Connection[Any], mac: str) -> dict[str, Any]:
    """``{"redirect": ...}`` for devices.show(): None when the vendor has no redirect service."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT service, status, outcome, reason, attempts, next_attempt_at, updated_at"
            "  FROM autoprov.device_redirect WHERE mac = %s", (normalize(mac),)
        ).fetchone()
    if row is None:
        return {"redirect": None}
    for key in ("next_attempt_at", "updated_at"):
        row[key] = row[key].isoformat() if row[key] else None
    return {"redirect": row}


def describe(redirect: dict[str, Any] | None) -> str:
    """One line for the text output."""
    if redirect is None:
        return "none (this vendor has no redirect service)"
    service, status = redirect["service"], redirect["status"]
    reason = redirect["reason"] or ""
    if status == "pending" and redirect["attempts"]:
        return (f"{service} pending: attempt {redirect['attempts']} failed ({reason}); "
                f"next try at {redirect['next_attempt_at']}")
    if status == "failed":
        return f"{service} failed: {Outcome(redirect['outcome']).words}: {reason}"
    if status == "skipped":
        return f"{service} skipped: {reason}"
    if status == "not queued":
        return f"{service} not queued (`autoprov redirect retry MAC` queues it)"
    return f"{service} {status}"
