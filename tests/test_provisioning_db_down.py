"""The database goes away and comes back: phones get 503 meanwhile, then configs again.

Runs on a cluster of its own, so stopping it does not disturb the shared one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from autoprov import db
from autoprov.config import Settings
from autoprov.pgcluster import Cluster
from tests.conftest import (
    RunningService,
    private_database,
    start_provisioning,
)
from tests.provisioning_helpers import bootstrap_url, client, config_url, phone_cert


@pytest.fixture
def own_database() -> Iterator[tuple[Cluster, Settings]]:
    with private_database("autoprov-dbdown-") as own:
        yield own


def test_database_down_is_503_and_the_service_recovers_by_itself(
    own_database: tuple[Cluster, Settings], tmp_path: Path,
) -> None:
    cluster, settings = own_database
    mac = "001565" + "0d0d0d"
    with db.connect(settings, autocommit=True) as conn:
        conn.execute("INSERT INTO subscriber (username, domain, password)"
                     " VALUES ('dd', 'example.test', 'pw-dd')")
        conn.execute("INSERT INTO autoprov.device (mac, vendor, model) VALUES (%s, 'yealink',"
                     " 'T46U')", (mac,))
    running: RunningService = start_provisioning(settings)
    try:
        plain = requests.Session()
        plain.trust_env = False
        tls_client = client(settings, phone_cert(settings, tmp_path, "yealink", mac))

        def statuses() -> tuple[int, int]:
            return (plain.get(bootstrap_url(settings, f"{mac}.cfg"), timeout=15).status_code,
                    tls_client.get(config_url(settings, f"{mac}.cfg"), timeout=15).status_code)

        assert statuses() == (200, 200)
        cluster.stop()
        down = plain.get(bootstrap_url(settings, f"{mac}.cfg"), timeout=15)
        assert down.status_code == 503
        assert down.headers["Retry-After"]
        assert statuses() == (503, 503)
        # Common files need no database: phones still get them.
        assert plain.get(bootstrap_url(settings, "y000000000108.cfg"), timeout=15).status_code \
            == 200
        cluster.start()
        assert statuses() == (200, 200)
        assert running.service.process is not None and running.service.process.poll() is None
        assert "database unavailable" in running.log()
    finally:
        running.stop()
