"""Whether the service can reach its database: /healthz, for load balancers.

A load balancer polls every few seconds and a flood of /healthz must not become a flood of
connections to PostgreSQL: the answer is kept for CACHE_S, and threads asking meanwhile wait for
the one that is finding out. Each check is a fresh, short connection, bounded in time, so a
database that hangs makes /healthz slow by seconds at most, never stuck.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg

from autoprov import db
from autoprov.config import Settings

CACHE_S = 1.0
# libpq waits at least 2 s whatever is asked.
CONNECT_TIMEOUT_S = 2
STATEMENT_TIMEOUT_MS = 2000
# Sent data unacknowledged this long (a host gone from the network) fails the connection.
TCP_USER_TIMEOUT_MS = 2000


def connect(settings: Settings, application: str) -> psycopg.Connection[tuple[object, ...]]:
    """A connection for a monitoring question: quick to give up at every step."""
    return psycopg.connect(db.url(settings), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                           application_name=application,
                           tcp_user_timeout=TCP_USER_TIMEOUT_MS,
                           options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}")


def database_answers(settings: Settings) -> bool:
    try:
        with connect(settings, "autoprov-healthz") as conn:
            conn.execute("SELECT 1")
    except (psycopg.Error, OSError):  # OSError: the private cluster's password file is missing
        return False
    return True


class DatabaseHealth:
    def __init__(self, settings: Settings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._up = False
        self._until = float("-inf")

    def up(self) -> bool:
        with self._lock:
            if self._clock() >= self._until:
                self._up = database_answers(self.settings)
                self._until = self._clock() + CACHE_S
            return self._up
