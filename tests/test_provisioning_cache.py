"""The service keeps rendered configs in memory: a change is served as soon as it is committed.

Every fetch below follows a first one that filled the cache, so what is checked is that the
change dropped the cached config (sql/006_config_cache.sql, provisioning_wsgi/cache.py). The
invalidation arrives by Postgres NOTIFY, normally within a millisecond of the commit but not
strictly before the committing client hears back, so the checks allow it a moment.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import requests

from autoprov import db
from autoprov.config import Settings
from provisioning_wsgi import cache, store, vendors
from provisioning_wsgi.render import Device, Renderer
from tests.conftest import RunningService, make_settings, start_provisioning
from tests.provisioning_helpers import (
    add_device,
    bootstrap_url,
    client,
    config_url,
    new_mac,
    phone_cert,
    settle,
)


def plain() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


def _tls(settings: Settings, tmp_path: Path, mac: str) -> requests.Session:
    return client(settings, phone_cert(settings, tmp_path / mac, "yealink", mac))


def at_once(check: Callable[[], bool], within: float = 2.0) -> bool:
    """True as soon as `check` holds; False if it still does not after `within` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _config(session: requests.Session, settings: Settings, mac: str) -> str:
    reply = session.get(config_url(settings, f"{mac}.cfg"), timeout=10)
    assert reply.status_code == 200
    return reply.text


def test_a_subscriber_password_change_is_served_on_the_next_fetch(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    sub = new_subscriber()
    mac = add_device(conn, "yealink", [sub])
    session = _tls(settings, tmp_path, mac)
    assert sub.password in _config(session, settings, mac)
    assert sub.password in _config(session, settings, mac)  # served from the cache

    conn.execute("UPDATE subscriber SET password = 'cache-rotated' WHERE username = %s",
                 (sub.username,))

    assert at_once(lambda: "cache-rotated" in _config(session, settings, mac))


def test_a_line_change_is_served_on_the_next_fetch(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    first, second = new_subscriber(), new_subscriber()
    mac = add_device(conn, "yealink", [first])
    session = _tls(settings, tmp_path, mac)
    assert second.username not in _config(session, settings, mac)

    conn.execute("INSERT INTO autoprov.device_line (device_id, line_no, subscriber_id)"
                 " SELECT d.id, 2, s.id FROM autoprov.device d, subscriber s"
                 " WHERE d.mac = %s AND s.username = %s", (mac, second.username))
    assert at_once(lambda: second.password in _config(session, settings, mac))

    conn.execute("UPDATE autoprov.device_line SET display_name = 'Cache Desk'"
                 " FROM autoprov.device d WHERE d.id = device_id AND d.mac = %s"
                 " AND line_no = 1", (mac,))
    assert at_once(lambda: "Cache Desk" in _config(session, settings, mac))

    conn.execute("DELETE FROM autoprov.device_line USING autoprov.device d"
                 " WHERE d.id = device_id AND d.mac = %s AND line_no = 2", (mac,))
    assert at_once(lambda: second.password not in _config(session, settings, mac))


def test_a_device_change_and_removal_are_served_on_the_next_fetch(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any,
) -> None:
    mac = add_device(conn, "yealink", [new_subscriber()], model="T46U")
    url = bootstrap_url(settings, f"{mac}.cfg")
    assert plain().get(url).status_code == 200
    assert plain().get(url).status_code == 200

    conn.execute("UPDATE autoprov.device SET vendor = 'cisco' WHERE mac = %s", (mac,))
    assert at_once(lambda: plain().get(url).status_code == 404)
    conn.execute("UPDATE autoprov.device SET vendor = 'yealink' WHERE mac = %s", (mac,))
    assert at_once(lambda: plain().get(url).status_code == 200)

    conn.execute("DELETE FROM autoprov.device_line USING autoprov.device d"
                 " WHERE d.id = device_id AND d.mac = %s", (mac,))
    conn.execute("DELETE FROM autoprov.device WHERE mac = %s", (mac,))
    assert at_once(lambda: plain().get(url).status_code == 404)


def test_a_created_device_stops_being_unknown_at_once(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any,
) -> None:
    mac = new_mac("yealink")
    url = bootstrap_url(settings, f"{mac}.cfg")
    assert plain().get(url).status_code == 404
    assert plain().get(url).status_code == 404  # the 404 itself is cached

    add_device(conn, "yealink", [new_subscriber()], mac=mac)

    assert at_once(lambda: plain().get(url).status_code == 200)


def test_a_cached_config_is_recorded_with_the_snapshot_it_was_read_in(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    sub = new_subscriber()
    mac = add_device(conn, "yealink", [sub])
    session = _tls(settings, tmp_path, mac)
    _config(session, settings, mac)
    _config(session, settings, mac)
    # A change that touches nothing this device's config is read from: the cache stays.
    with db.connect(settings) as other:
        other.execute("SELECT 1")
        row = other.execute("SELECT pg_current_xact_id()::text").fetchone()
        assert row is not None
        xid = row[0]
    _config(session, settings, mac)
    settle()

    snapshots = conn.execute(
        "SELECT f.read_snapshot::text, pg_visible_in_snapshot(%s::xid8, f.read_snapshot)"
        "  FROM autoprov.config_fetch f JOIN autoprov.device d ON d.id = f.device_id"
        " WHERE d.mac = %s ORDER BY f.id", (xid, mac)).fetchall()
    assert len(snapshots) == 3
    # All three were served from one read: each carries that read's snapshot, which does not
    # hold the transaction committed after it.
    assert len({s for s, _ in snapshots}) == 1
    assert [visible for _, visible in snapshots] == [False] * 3


def test_a_template_changed_on_disk_is_served_within_a_second(
    settings: Settings, conn: psycopg.Connection[Any], new_subscriber: Any, tmp_path: Path,
) -> None:
    templates = tmp_path / "templates"
    (templates / "yealink" / "bootstrap").mkdir(parents=True)
    override = templates / "yealink" / "bootstrap" / "MAC.cfg"
    override.write_text("#!version:1.0.0.1\n# first\n")
    own = make_settings(tmp_path / "var", db_url=settings.db_url, template_dir=str(templates))
    mac = add_device(conn, "yealink", [new_subscriber()])
    running = start_provisioning(own)
    try:
        url = bootstrap_url(own, f"{mac}.cfg")
        assert "# first" in plain().get(url).text
        override.write_text("#!version:1.0.0.1\n# second\n")
        later = time.time() + 5
        os.utime(override, (later, later))  # a new mtime even on a coarse clock
        deadline = time.monotonic() + 3
        while "# second" not in plain().get(url).text:
            assert time.monotonic() < deadline, "the changed template was not picked up"
            time.sleep(0.1)
    finally:
        running.stop()


def test_a_new_per_model_template_is_served_within_a_second(
    settings: Settings, conn: psycopg.Connection[Any], new_subscriber: Any, tmp_path: Path,
) -> None:
    """The renderer remembers which file a model renders from; a new override for the model
    must still win, and the cache must not keep the generic file's output."""
    templates = tmp_path / "templates"
    generic = templates / "yealink" / "bootstrap" / "MAC.cfg"
    generic.parent.mkdir(parents=True)
    generic.write_text("#!version:1.0.0.1\n# every model\n")
    own = make_settings(tmp_path / "var", db_url=settings.db_url, template_dir=str(templates))
    mac = add_device(conn, "yealink", [new_subscriber()], model="T54W")
    running = start_provisioning(own)
    try:
        url = bootstrap_url(own, f"{mac}.cfg")
        assert "# every model" in plain().get(url).text
        per_model = templates / "yealink" / "bootstrap" / "T54W" / "MAC.cfg"
        per_model.parent.mkdir()
        per_model.write_text("#!version:1.0.0.1\n# only the T54W\n")
        deadline = time.monotonic() + 3
        while "# only the T54W" not in plain().get(url).text:
            assert time.monotonic() < deadline, "the new per-model template was not picked up"
            time.sleep(0.1)
        time.sleep(1.5)  # past any remembered choice: it stays
        assert "# only the T54W" in plain().get(url).text
    finally:
        running.stop()


def test_queued_fetch_records_are_written_at_shutdown(
    settings: Settings, conn: psycopg.Connection[Any], new_subscriber: Any,
) -> None:
    mac = add_device(conn, "yealink", [new_subscriber()])
    row = conn.execute("SELECT id, pg_current_snapshot()::text FROM autoprov.device"
                       " WHERE mac = %s", (mac,)).fetchone()
    assert row is not None
    writer = cache.FetchWriter(store.Store(settings))
    writer.start()
    for _ in range(3):
        writer.record(row[0], "tls", f"{mac}.cfg", "v1", "127.0.0.1", "ua", row[1])

    writer.stop()  # before the batch interval is over

    assert conn.execute("SELECT count(*), min(read_snapshot::text), max(read_snapshot::text)"
                        "  FROM autoprov.config_fetch WHERE device_id = %s",
                        (row[0],)).fetchone() == (3, row[1], row[1])


def test_an_answer_read_before_an_invalidation_is_not_kept(settings: Settings) -> None:
    configs = cache.ConfigCache(settings)
    configs._fd = 0  # as if listening
    key = ("tls", "001565000001", "001565000001.cfg")
    epoch = configs.epoch()
    configs.invalidate("42")  # a change to device 42 arrives while device 7 was being read

    configs.put(key, 7, "stale", epoch)
    assert key not in configs._entries

    configs.put(key, 7, "fresh", configs.epoch())
    configs.invalidate("7")
    assert key not in configs._entries
    configs.put(key, None, "unknown", configs.epoch())
    configs.invalidate("9 001565000001")  # device 9 created with that MAC
    assert key not in configs._entries


def test_an_edited_include_is_rendered_within_a_second_by_the_renderer_alone(
        tmp_path: Path) -> None:
    """Jinja no longer stats every template on every render; the renderer itself looks at the
    loaded files (includes too) once a second, with or without the rendered-config cache."""
    templates = tmp_path / "templates"
    (templates / "yealink" / "bootstrap").mkdir(parents=True)
    (templates / "yealink" / "bootstrap" / "MAC.cfg").write_text(
        '#!version:1.0.0.1\n{% include "yealink/_part.cfg" %}')
    part = templates / "yealink" / "_part.cfg"
    part.write_text("# first\n")
    renderer = Renderer(make_settings(tmp_path / "var", template_dir=str(templates)))
    requested = vendors.parse("001565000001.cfg")
    assert requested is not None
    device = Device(1, "001565000001", "yealink", "T46U")
    assert b"# first" in renderer.bootstrap(requested, device).body
    part.write_text("# second\n")
    later = time.time() + 5
    os.utime(part, (later, later))  # a new mtime even on a coarse clock
    deadline = time.monotonic() + 3
    while b"# second" not in renderer.bootstrap(requested, device).body:
        assert time.monotonic() < deadline, "the edited include was not picked up"
        time.sleep(0.1)


def test_a_removed_per_model_template_gives_way_to_the_generic_one_within_a_second(
        tmp_path: Path) -> None:
    """The renderer remembers which file a model renders from; when an operator removes the
    model's override, the generic file is rendered again (and the cache hears of it)."""
    templates = tmp_path / "templates"
    generic = templates / "yealink" / "bootstrap" / "MAC.cfg"
    per_model = templates / "yealink" / "bootstrap" / "T54W" / "MAC.cfg"
    per_model.parent.mkdir(parents=True)
    generic.write_text("#!version:1.0.0.1\n# every model\n")
    per_model.write_text("#!version:1.0.0.1\n# only the T54W\n")
    renderer = Renderer(make_settings(tmp_path / "var", template_dir=str(templates)))
    changes: list[str] = []
    renderer.on_templates_changed(lambda: changes.append("changed"))
    requested = vendors.parse("001565000001.cfg")
    assert requested is not None
    device = Device(1, "001565000001", "yealink", "T54W")
    assert b"# only the T54W" in renderer.bootstrap(requested, device).body

    per_model.unlink()
    deadline = time.monotonic() + 3
    while b"# every model" not in renderer.bootstrap(requested, device).body:
        assert time.monotonic() < deadline, "the removed override is still rendered"
        time.sleep(0.1)
    assert changes == ["changed"]
