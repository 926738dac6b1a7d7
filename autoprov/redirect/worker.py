"""Runs the outbox: claims due jobs, calls the vendor, records the outcome.

Several workers may share one database (row locks with SKIP LOCKED); each wakes on the
``autoprov_redirect`` NOTIFY that the device triggers send, and polls as a fallback.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg

from autoprov import db
from autoprov.config import Settings
from autoprov.mac import colon_form
from autoprov.redirect import jobs, registry
from autoprov.redirect.base import Outcome, RedirectService, Result

log = logging.getLogger("autoprov.redirect")

# With a due job that cannot be claimed (another worker is running it), look again after this.
_BUSY_RECHECK_S = 1.0
_DB_RECONNECT_S = 5.0
# Skipped jobs (service not configured) logged one per line, then one line for the rest.
SKIP_LINES = 10


class Worker:
    def __init__(self, settings: Settings,
                 services: dict[str, RedirectService] | None = None) -> None:
        self.settings = settings
        # Built once, so Yealink's server entry is added once per worker, not per job.
        self.services = registry.build(settings) if services is None else services
        self._configured = sorted(self.services)

    def run_one(self, conn: jobs.Conn) -> bool:
        """Run one due job; False when there is none."""
        with conn.transaction():
            job = jobs.claim(conn, self._configured)
            if job is None:
                return False
            result = self._call(self.services[job.service], job)
            self._record(conn, job, result)
        return True

    def skip_unconfigured(self, conn: jobs.Conn) -> int:
        """Settle the due jobs of services that are not configured here, in bulk."""
        count = 0
        for name in jobs.unconfigured_due(conn, self._configured):
            reason = registry.unavailable_reason(name)
            with conn.transaction():
                skipped = jobs.skip(conn, name, reason)
            count += len(skipped)
            for vendor, mac, action in skipped[:SKIP_LINES]:
                log.warning("redirect %s %s %s: skipped: %s", vendor, colon_form(mac), action,
                            reason)
            if len(skipped) > SKIP_LINES:
                log.warning("redirect %s: %d more jobs skipped: %s", name,
                            len(skipped) - SKIP_LINES, reason)
        return count

    def run_due(self, conn: jobs.Conn, stop: threading.Event | None = None) -> int:
        count = self.skip_unconfigured(conn)
        while not (stop and stop.is_set()) and self.run_one(conn):
            count += 1
        return count

    def _call(self, service: RedirectService, job: jobs.Job) -> Result:
        try:
            if job.action == "register":
                return service.register(job.mac, job.serial)
            return service.deregister(job.mac)
        except Exception as exc:  # a bug in an adapter must not stop the other jobs
            log.exception("redirect %s %s %s: adapter error", job.vendor, colon_form(job.mac),
                          job.action)
            return Result(Outcome.TEMPORARY, f"internal error: {type(exc).__name__}")

    def _record(self, conn: jobs.Conn, job: jobs.Job, result: Result) -> None:
        who = f"redirect {job.vendor} {colon_form(job.mac)} {job.action}"
        words = result.outcome.words + (f" ({result.message})" if result.message else "")
        success = Outcome.REGISTERED if job.action == "register" else Outcome.NOT_FOUND
        if result.outcome is success:
            jobs.finish(conn, job, "done", result)
            log.info("%s: done: %s", who, words)
        elif result.outcome.temporary:
            delay_ms = min(self.settings.redirect_retry_initial_ms * 2 ** min(job.attempts, 40),
                           self.settings.redirect_retry_max_ms)
            state = jobs.finish(conn, job, "pending", result, delay_ms=delay_ms)
            log.warning("%s: attempt %d: %s; %s", who, job.attempts + 1, words,
                        f"retry in {delay_ms / 1000:g}s" if state == "pending" else state)
        else:
            state = jobs.finish(conn, job, "failed", result)
            log.error("%s: %s: %s", who, state, words)


def run_once(settings: Settings, services: dict[str, RedirectService] | None = None) -> int:
    """Run every job that is due now; returns how many ran. For tests and cron-style use."""
    with db.connect(settings, autocommit=True) as conn:
        return Worker(settings, services).run_due(conn)


def run_worker(settings: Settings, stop: threading.Event) -> None:
    """Run jobs until ``stop`` is set; survives database restarts. Call it in a thread."""
    worker = Worker(settings)
    poll_s = settings.redirect_poll_ms / 1000
    log.info("redirect worker started (services configured: %s)",
             ", ".join(sorted(worker.services)) or "none")
    while not stop.is_set():
        try:
            with db.connect(settings, autocommit=True) as conn:
                conn.execute(f"LISTEN {jobs.CHANNEL}")
                while not stop.is_set():
                    worker.run_due(conn, stop)
                    due = jobs.seconds_until_due(conn)
                    if due is None:
                        wait = poll_s
                    elif due > 0:
                        wait = min(poll_s, due)
                    else:
                        wait = min(poll_s, _BUSY_RECHECK_S)
                    _wait_for_notify(conn, stop, wait)
        except psycopg.OperationalError as exc:
            log.warning("redirect worker: database unavailable (%s); retrying in %gs",
                        str(exc).strip(), _DB_RECONNECT_S)
            stop.wait(_DB_RECONNECT_S)
        except psycopg.Error:
            log.exception("redirect worker: database error; retrying in %gs", _DB_RECONNECT_S)
            stop.wait(_DB_RECONNECT_S)
    log.info("redirect worker stopped")


def _wait_for_notify(conn: psycopg.Connection[Any], stop: threading.Event,
                     seconds: float) -> None:
    """Sleep up to ``seconds``, waking early on a NOTIFY; notifications that came in while we
    were busy are kept by psycopg and end the wait at once. Short slices keep stop prompt."""
    remaining = seconds
    while remaining > 0 and not stop.is_set():
        chunk = min(remaining, 0.25)
        if any(True for _ in conn.notifies(timeout=chunk, stop_after=1)):
            # Several devices in one transaction send several: take them all now.
            for _ in conn.notifies(timeout=0):
                pass
            return
        remaining -= chunk
