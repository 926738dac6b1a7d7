"""Kamailio's own statistics, over its JSON-RPC datagram socket.

`stats.get_statistics all` answers "group:name = value" for every statistic of every loaded
module (core, tmx, sl, usrloc, registrar, shmem, tcp, ...); each becomes kamailio_GROUP_NAME.
The RPC does not say which are counters and which gauges (shmem:free_size, usrloc's contacts),
so they are exposed untyped.
"""

from __future__ import annotations

from autoprov import kamailio
from autoprov.config import Settings
from provisioning_wsgi.exposition import Family, metric_name

# A scrape waits no longer than this for the proxy.
RPC_TIMEOUT_S = 1.0
# What read() raises when the proxy does not answer (OSError: no socket; ValueError: no JSON).
ERRORS = (kamailio.RpcError, OSError, ValueError)


def read(settings: Settings) -> list[Family]:
    stats = kamailio.rpc(settings, "stats.get_statistics", "all", timeout=RPC_TIMEOUT_S)
    return families(stats if isinstance(stats, list) else [])


def families(stats: list[object]) -> list[Family]:
    """One untyped family per "group:name = value" line; anything else is skipped."""
    found: dict[str, Family] = {}
    for line in stats:
        statistic, sep, value = str(line).partition(" = ")
        group, colon, name = statistic.partition(":")
        if not (sep and colon):
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        metric = metric_name(f"kamailio_{group}_{name}")
        if metric not in found:  # two names may sanitize to one: the first wins
            found[metric] = Family(metric, "untyped", f"Kamailio statistic {statistic}")
            found[metric].add(number)
    return list(found.values())
