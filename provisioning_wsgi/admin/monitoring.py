"""What /healthz and /metrics answer (who may ask is the admin app's business).

/healthz: 200 "ok" while the database answers, else 503; see health.py for how often it asks.
/metrics: the request counters of every worker process, then the database's and Kamailio's
numbers. A source that does not answer does not fail the scrape: its gauge (autoprov_database_up,
kamailio_up) says 0 and its series are left out. See docs/monitoring.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from autoprov.config import Settings
from provisioning_wsgi import exposition, metrics
from provisioning_wsgi.admin import db_metrics, kamailio_metrics, web
from provisioning_wsgi.admin.health import DatabaseHealth
from provisioning_wsgi.exposition import Family

log = logging.getLogger("autoprov.provisioning")


class Source:
    """Series read from elsewhere at each scrape, and whether that worked."""

    def __init__(self, settings: Settings, up: str, what: str,
                 read: Callable[[Settings], list[Family]],
                 errors: tuple[type[Exception], ...]) -> None:
        self.settings = settings
        self.up = up
        self.what = what
        self.read = read
        self.errors = errors
        self._was_up = True

    def families(self) -> list[Family]:
        up = Family(self.up, "gauge", f"1 when {self.what} answered this scrape, else 0")
        try:
            found = self.read(self.settings)
        except self.errors as exc:
            # Once per outage, not once per scrape: the gauge tells Prometheus every time.
            if self._was_up:
                log.warning("metrics: %s does not answer: %s", self.what, str(exc).strip())
            self._was_up = False
            up.add(0)
            return [up]
        if not self._was_up:
            log.info("metrics: %s answers again", self.what)
        self._was_up = True
        up.add(1)
        return [up, *found]


class Monitoring:
    def __init__(self, settings: Settings, shared: metrics.Shared) -> None:
        self.shared = shared
        self.database = DatabaseHealth(settings)
        self.sources = [
            Source(settings, "autoprov_database_up", "the database", db_metrics.read,
                   db_metrics.ERRORS),
            Source(settings, "kamailio_up", "Kamailio (stats.get_statistics on rpc_socket)",
                   kamailio_metrics.read, kamailio_metrics.ERRORS),
        ]

    def healthz(self) -> web.Response:
        if self.database.up():
            return web.Response(200, b"ok\n")
        return web.Response(503, b"database unreachable\n", reason="database-unreachable")

    def metrics(self) -> web.Response:
        families = self.shared.families()
        for source in self.sources:
            families += source.families()
        return web.Response(200, exposition.render(families), exposition.CONTENT_TYPE)
