"""Firmware from firmware_dir: served by the web front itself on both phone ports (ETag, Range,
If-None-Match), strict names only, and named in the config of a phone whose model has one."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from autoprov.config import Settings
from provisioning_wsgi import vendors
from provisioning_wsgi.render import Device, Line, Renderer
from tests.conftest import make_settings, start_provisioning, world_readable_tmpdir
from tests.provisioning_helpers import add_device, client, config_url, phone_cert

IMAGE = "T46U-108.86.0.90.rom"
PATH = "/device/autoprov/firmware/yealink/T46U/" + IMAGE


@pytest.fixture(scope="module")
def image() -> bytes:
    return secrets.token_bytes(2 * 1024 * 1024)


@pytest.fixture(scope="module")
def served(settings: Settings, tmp_path_factory: pytest.TempPathFactory,
           image: bytes) -> Iterator[Settings]:
    # Where nginx's workers (www-data when started as root) can read: not pytest's 0700 folders.
    firmware_dir = world_readable_tmpdir("autoprov-firmware-")
    model = firmware_dir / "yealink" / "T46U"
    model.mkdir(parents=True)
    (model / IMAGE).write_bytes(image)
    (model / ".hidden").write_bytes(b"not served")
    for path in (firmware_dir, firmware_dir / "yealink", model, *model.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    own = make_settings(tmp_path_factory.mktemp("firmware") / "var", db_url=settings.db_url,
                        firmware_dir=str(firmware_dir))
    running = start_provisioning(own)
    try:
        yield own
    finally:
        running.stop()
        shutil.rmtree(firmware_dir, ignore_errors=True)


def _plain(settings: Settings, path: str, **headers: str) -> requests.Response:
    session = requests.Session()
    session.trust_env = False
    return session.get(f"http://127.0.0.1:{settings.http_port}{path}", headers=headers,
                       timeout=10)


def test_the_plain_port_serves_the_image_whole_in_ranges_and_not_again(
    served: Settings, image: bytes
) -> None:
    whole = _plain(served, PATH)
    assert whole.status_code == 200 and whole.content == image
    etag = whole.headers["ETag"]

    part = _plain(served, PATH, Range="bytes=100-199")
    assert part.status_code == 206
    assert part.content == image[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(image)}"

    assert _plain(served, PATH, **{"If-None-Match": etag}).status_code == 304


@pytest.mark.parametrize("path", [
    "/device/autoprov/firmware/yealink/T46U/.hidden",
    "/device/autoprov/firmware/yealink/T46U/",
    "/device/autoprov/firmware/yealink/T46U/missing.rom",
    "/device/autoprov/firmware/yealink/T46U/..%2f..%2f..%2fetc%2fpasswd",
    "/device/autoprov/firmware/yealink/../../etc/passwd",
    "/device/autoprov/firmware/yealink/T46U/a/b",
])
def test_other_names_are_not_found(served: Settings, path: str) -> None:
    reply = _plain(served, path)
    assert reply.status_code in (400, 404), (path, reply.status_code)
    assert b"root:" not in reply.content and b"not served" not in reply.content


def test_the_tls_port_serves_it_to_a_phone_and_its_config_names_it(
    served: Settings, conn: psycopg.Connection[Any], new_subscriber: Any, tmp_path: Path,
    image: bytes,
) -> None:
    with_image = add_device(conn, "yealink", [new_subscriber()], model="T46U")
    without = add_device(conn, "yealink", [new_subscriber()], model="T46G")
    cert = phone_cert(served, tmp_path, "yealink", with_image)
    session = client(served, cert)

    reply = session.get(f"https://127.0.0.1:{served.https_port}{PATH}", timeout=10)
    assert reply.status_code == 200 and reply.content == image

    config = session.get(config_url(served, f"{with_image}.cfg"), timeout=10)
    assert config.status_code == 200
    expected = f"https://{served.public_host}:{served.https_port}{PATH}"
    assert f"static.firmware.url = {expected}\n" in config.text

    other = client(served, phone_cert(served, tmp_path, "yealink", without))
    assert "static.firmware.url" not in other.get(config_url(served, f"{without}.cfg"),
                                                  timeout=10).text


def test_the_tls_port_wants_a_phone_certificate_for_it_too(served: Settings) -> None:
    reply = client(served).get(f"https://127.0.0.1:{served.https_port}{PATH}", timeout=10)
    assert reply.status_code == 403


def test_a_snom_is_pointed_at_its_firmware_settings_file(tmp_path: Path) -> None:
    """Snom reads its image's URL from a firmware-settings file that firmware_status names."""
    (tmp_path / "snom" / "D785").mkdir(parents=True)
    (tmp_path / "snom" / "D785" / "snomD785-10.1.54.13.bin").write_bytes(b"image")
    renderer = Renderer(Settings(public_host="prov.example.test", firmware_dir=str(tmp_path)))
    device = Device(1, "000413aabbcc", "snom", "D785")
    lines = [Line(1, "alice", "example.test", "s3cret", "")]
    snom = vendors.get("snom")

    config = renderer.config(vendors.parse_as(snom, "snomD785-000413AABBCC.htm"), device,
                             lines).body.decode()
    status = vendors.parse_as(snom, "snom-firmware-000413AABBCC.xml")
    assert status is not None and status.mac == "000413aabbcc"
    firmware_settings = renderer.config(status, device, lines).body.decode()

    assert "<update_policy perm=\"R\">auto_update</update_policy>" in config
    assert ("<firmware_status perm=\"R\">https://prov.example.test:1444/device/autoprov/config/"
            "snom-firmware-000413AABBCC.xml</firmware_status>") in config
    assert ("<firmware perm=\"R\">https://prov.example.test:1444/device/autoprov/firmware/"
            "snom/D785/snomD785-10.1.54.13.bin</firmware>") in firmware_settings
    without = Renderer(Settings(public_host="prov.example.test")).config(
        vendors.parse_as(snom, "snomD785-000413AABBCC.htm"), device, lines).body.decode()
    assert "firmware_status" not in without and "settings_only" in without
