"""The metrics read from the database at each scrape: registered contacts, resync requests and
their NOTIFY outcomes, redirect jobs.

These are gauges of the rows there are now, by state: the settled states (done, accepted, ...)
only grow, as those tables keep their history, so a rate is their increase(); pending and
sending are the backlog of the moment. Every known state is given, 0 included, so a series
exists before the first row of its state does.
"""

from __future__ import annotations

import psycopg

from autoprov.config import Settings
from provisioning_wsgi.admin.health import connect
from provisioning_wsgi.exposition import Family

# The CHECK constraints' states (sql/002_resync.sql, 005, 004_redirect.sql).
RESYNC_STATES = ("pending", "sending", "done", "failed", "fetched")
NOTIFY_RESULTS = ("queued", "sent", "accepted", "refused", "challenge_failed", "no_answer")
REDIRECT_STATES = ("pending", "done", "failed", "skipped", "superseded")
# What read() raises when the database does not answer (OSError: the private cluster's password
# file is missing).
ERRORS = (psycopg.Error, OSError)

Conn = psycopg.Connection[tuple[object, ...]]


def read(settings: Settings) -> list[Family]:
    with connect(settings, "autoprov-metrics") as conn:
        return _families(conn)


def _by_key(conn: Conn, query: str) -> dict[tuple[str, ...], int]:
    return {tuple(str(part) for part in row[:-1]): int(str(row[-1]))
            for row in conn.execute(query).fetchall()}


def _families(conn: Conn) -> list[Family]:
    contacts = Family("autoprov_registered_contacts", "gauge",
                      "Bindings in Kamailio's location table that have not expired")
    [(count,)] = conn.execute(
        "SELECT count(*) FROM location WHERE expires > localtimestamp").fetchall()
    contacts.add(int(str(count)))

    devices = Family("autoprov_devices", "gauge", "Devices in autoprov.device")
    [(count,)] = conn.execute("SELECT count(*) FROM autoprov.device").fetchall()
    devices.add(int(str(count)))

    requests = Family("autoprov_resync_requests", "gauge",
                      "Rows of autoprov.resync_request, by state")
    found = _by_key(conn, "SELECT state, count(*) FROM autoprov.resync_request GROUP BY 1")
    for state in RESYNC_STATES:
        requests.add(found.get((state,), 0), ("state", state))

    notifies = Family("autoprov_resync_notifies", "gauge",
                      "NOTIFYs to registered contacts (autoprov.resync_notify), by outcome")
    found = _by_key(conn, "SELECT state, count(*) FROM autoprov.resync_notify GROUP BY 1")
    for result in NOTIFY_RESULTS:
        notifies.add(found.get((result,), 0), ("result", result))

    jobs = Family("autoprov_redirect_jobs", "gauge",
                  "Vendor redirect registration jobs (autoprov.redirect_job), by service and "
                  "state")
    found = _by_key(conn, "SELECT service, state, count(*) FROM autoprov.redirect_job"
                          " GROUP BY 1, 2")
    services = {str(row[0]) for row in conn.execute(
        "SELECT redirect_service FROM autoprov.vendor WHERE redirect_service IS NOT NULL")}
    services |= {service for service, _state in found}
    for service in sorted(services):
        for state in REDIRECT_STATES:
            jobs.add(found.get((service, state), 0), ("service", service), ("state", state))
    return [contacts, devices, requests, notifies, jobs]
