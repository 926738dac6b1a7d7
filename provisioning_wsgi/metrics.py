"""Request counters and latency histograms of every worker process, for /metrics.

The numbers live in one anonymous shared mapping that the parent makes before it forks the
workers: each worker writes into it, and worker 0, which serves /metrics, sums all of it. A
worker that is started again writes on into the rows its predecessor left, so the counters
survive it.

Each (port, worker, serving thread) has a row of its own, and only that thread writes it: an
increment (`row[i] += 1`, a read and a write) then needs no lock, and nothing is shared between
threads on the request path. A thread beyond the rows a port was given (cheroot starts a fixed
number, so none is expected) shares one more row under a lock. The values are doubles: whole
counts stay exact up to 2**53.
"""

from __future__ import annotations

import bisect
import itertools
import mmap
import threading

from provisioning_wsgi.exposition import Family

PORTS = ("bootstrap", "tls", "admin")
# Every status the phones' app and the operators' app answer with (their REASONS tables); any
# other is counted as status="other".
STATUSES = (200, 303, 304, 400, 401, 403, 404, 405, 413, 500, 503)
# Seconds. A cached fetch is answered in well under a millisecond; one that reads and renders a
# config in a few; a database in trouble shows in the upper buckets.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_STATUS_COLUMN = {status: column for column, status in enumerate(STATUSES)}
_OTHER = len(STATUSES)
_FIRST_BUCKET = _OTHER + 1
_SUM = _FIRST_BUCKET + len(BUCKETS) + 1  # the buckets, then +Inf
ROW = _SUM + 1
_DOUBLE = 8


class Shared:
    """The mapping, laid out port by port, then worker by worker, then row by row."""

    def __init__(self, workers: int, threads_per_port: int) -> None:
        """threads_per_port: the most threads one port's server runs in one worker."""
        self.workers = workers
        self.rows = threads_per_port + 1  # the last one is for threads beyond those
        self._memory = mmap.mmap(-1, len(PORTS) * workers * self.rows * ROW * _DOUBLE)
        self._view = memoryview(self._memory).cast("d")

    def meter(self, port: str, worker: int) -> Meter:
        """What the app serving `port` in worker `worker` records its requests with."""
        first = (PORTS.index(port) * self.workers + worker) * self.rows
        return Meter([self._view[(first + i) * ROW:(first + i + 1) * ROW]
                      for i in range(self.rows)])

    def families(self) -> list[Family]:
        """Every worker's counts, summed per port."""
        values = self._view.tolist()  # one copy: the columns below are read from the same
        span = self.workers * self.rows * ROW
        requests = Family("autoprov_http_requests_total", "counter",
                          "Requests answered, by port and HTTP status, by every worker process")
        latency = Family("autoprov_http_request_duration_seconds", "histogram",
                         "Time from a parsed request to its answer, by port")
        for index, port in enumerate(PORTS):
            block = values[index * span:(index + 1) * span]
            column = [sum(block[c::ROW]) for c in range(ROW)]
            for status, count in zip((*map(str, STATUSES), "other"), column[:_FIRST_BUCKET],
                                     strict=True):
                requests.add(count, ("port", port), ("status", status))
            below = 0.0
            for bound, count in zip((*map(str, BUCKETS), "+Inf"), column[_FIRST_BUCKET:_SUM],
                                    strict=True):
                below += count
                latency.add(below, ("port", port), ("le", bound), suffix="_bucket")
            latency.add(column[_SUM], ("port", port), suffix="_sum")
            latency.add(below, ("port", port), suffix="_count")
        return [requests, latency]


class Meter:
    """One port's rows in one worker process; `record` is on the request path."""

    def __init__(self, rows: list[memoryview[float]]) -> None:
        self._rows = rows[:-1]
        self._shared_row = rows[-1]
        self._lock = threading.Lock()
        self._taken = itertools.count()  # next() is atomic under the GIL
        self._local = threading.local()

    def record(self, status: int, seconds: float) -> None:
        try:
            row = self._local.row
        except AttributeError:
            row = self._claim()
        if row is None:
            with self._lock:
                _add(self._shared_row, status, seconds)
            return
        # _add, inlined: this runs for every request.
        row[_STATUS_COLUMN.get(status, _OTHER)] += 1.0
        row[_FIRST_BUCKET + bisect.bisect_left(BUCKETS, seconds)] += 1.0
        row[_SUM] += seconds

    def _claim(self) -> memoryview[float] | None:
        """This thread's own row, or None: the shared one."""
        index = next(self._taken)
        row = self._rows[index] if index < len(self._rows) else None
        self._local.row = row
        return row


def _add(row: memoryview[float], status: int, seconds: float) -> None:
    row[_STATUS_COLUMN.get(status, _OTHER)] += 1.0
    row[_FIRST_BUCKET + bisect.bisect_left(BUCKETS, seconds)] += 1.0
    row[_SUM] += seconds
