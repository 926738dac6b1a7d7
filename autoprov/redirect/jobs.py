"""The outbox in SQL (sql/004_redirect.sql): claiming a job, recording its outcome, retrying.

A worker holds the claimed job's row lock for the length of the vendor call. If the worker dies,
its transaction ends, the lock goes and the job is pending again: it runs again rather than
being lost, which is safe because registering and deregistering are idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from autoprov.mac import normalize
from autoprov.redirect.base import Result

CHANNEL = "autoprov_redirect"
Conn = psycopg.Connection[Any]


class RedirectError(ValueError):
    """A redirect request that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class Job:
    id: int
    service: str
    vendor: str
    mac: str
    action: str
    attempts: int
    serial: str = ""  # the device's serial number, for a registration (sql/019)


# Jobs for one MAC at one service run in order: a job waits while an older one is pending.
_RUNNABLE = """
  FROM autoprov.redirect_job j
 WHERE j.state = 'pending'
   AND NOT EXISTS (SELECT 1 FROM autoprov.redirect_job e
                    WHERE e.service = j.service AND e.mac = j.mac AND e.id < j.id
                      AND e.state = 'pending')
"""

_CLAIM = f"""
SELECT j.id, j.service, j.vendor, j.mac, j.action, j.attempts,
       coalesce((SELECT d.serial_number FROM autoprov.device d WHERE d.mac = j.mac), '')
       {_RUNNABLE}
   AND j.next_attempt_at <= now()
   AND j.service = ANY(%(services)s)
 ORDER BY j.next_attempt_at, j.id
 LIMIT 1
 FOR UPDATE OF j SKIP LOCKED
"""

# A job that did not succeed is moot if a newer one for its MAC arrived while it ran (the
# trigger could not supersede it: it was locked).
_FINISH = """
UPDATE autoprov.redirect_job j
   SET state = CASE WHEN %(state)s IN ('pending', 'failed') AND EXISTS (
                        SELECT 1 FROM autoprov.redirect_job n
                         WHERE n.service = j.service AND n.mac = j.mac AND n.id > j.id
                           AND n.state <> 'superseded')
                    THEN 'superseded' ELSE %(state)s END,
       attempts = attempts + %(attempted)s,
       outcome = %(outcome)s,
       reason = %(reason)s,
       -- Not now(): that is when the transaction began, before the vendor call.
       next_attempt_at = clock_timestamp() + %(delay_ms)s * interval '1 millisecond',
       updated_at = clock_timestamp()
 WHERE id = %(id)s
RETURNING state
"""


# Jobs of a service this worker has no adapter for cannot run: they are all settled in one
# statement (a DBA adding 10,000 devices must not cost 10,000 transactions and log lines). Order
# per MAC does not matter when every one of them is skipped.
_SKIP = """
UPDATE autoprov.redirect_job
   SET state = 'skipped', reason = %(reason)s, updated_at = clock_timestamp()
 WHERE id IN (SELECT id FROM autoprov.redirect_job
               WHERE state = 'pending' AND service = %(service)s AND next_attempt_at <= now()
                 FOR UPDATE SKIP LOCKED)
RETURNING vendor, mac, action
"""


def claim(conn: Conn, services: list[str]) -> Job | None:
    """The next due job of one of ``services``, row-locked until the caller's transaction
    ends."""
    row = conn.execute(_CLAIM, {"services": services}).fetchone()
    return Job(*row) if row else None


def unconfigured_due(conn: Conn, services: list[str]) -> list[str]:
    """Services, other than ``services``, that have due jobs."""
    return [str(r[0]) for r in conn.execute(
        "SELECT DISTINCT service FROM autoprov.redirect_job"
        " WHERE state = 'pending' AND next_attempt_at <= now() AND service <> ALL(%s)",
        (services,))]


def skip(conn: Conn, service: str, reason: str) -> list[tuple[str, str, str]]:
    """Mark every due job of ``service`` skipped; returns their (vendor, mac, action)."""
    rows = conn.execute(_SKIP, {"service": service, "reason": reason}).fetchall()
    return [(str(v), str(m), str(a)) for v, m, a in rows]


def finish(conn: Conn, job: Job, state: str, result: Result | None, reason: str = "",
           delay_ms: int = 0) -> str:
    """Record the outcome; returns the state stored (superseded if a newer job came)."""
    row = conn.execute(_FINISH, {
        "id": job.id, "state": state, "attempted": int(result is not None),
        "outcome": result.outcome.value if result else None,
        "reason": (result.message if result else reason) or None, "delay_ms": delay_ms,
    }).fetchone()
    assert row is not None
    return str(row[0])


def seconds_until_due(conn: Conn) -> float | None:
    """How long until a job becomes runnable (<= 0: now); None when nothing is pending."""
    row = conn.execute(
        f"SELECT extract(epoch FROM min(j.next_attempt_at) - now())::float8 {_RUNNABLE}"
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def retry(conn: Conn, mac: str) -> int:
    """Queue the MAC's failed or skipped job again; returns the job's id."""
    try:
        with conn.transaction():
            row = conn.execute("SELECT autoprov.redirect_retry(%s)", (normalize(mac),)).fetchone()
    except psycopg.errors.NoDataFound as exc:
        raise RedirectError(exc.diag.message_primary or str(exc)) from None
    assert row is not None
    return int(row[0])
