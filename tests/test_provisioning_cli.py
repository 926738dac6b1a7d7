"""`autoprov render`, `autoprov tls ...` and the fetch shown by `autoprov device show`."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from cryptography import x509
from cryptography.x509.oid import NameOID

from autoprov.config import Settings
from tests.conftest import VENV_BIN, RunningService, autoprov_cli
from tests.provisioning_helpers import (
    add_device,
    bootstrap_url,
    client,
    config_url,
    device_file,
    new_mac,
    settle,
)


def render(settings: Settings, *args: str) -> bytes:
    """`autoprov render` output as raw bytes (Panasonic's CRLF must survive)."""
    import os

    env = dict(os.environ, **settings.as_env(),
               AUTOPROV_CONFIG=str(settings.var_dir / "no-such-config.toml"))
    done = subprocess.run([str(VENV_BIN / "autoprov"), "render", *args], env=env,
                          capture_output=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def test_tls_ca_prints_the_development_ca(settings: Settings) -> None:
    out = autoprov_cli(settings, "tls", "ca", check=True).stdout.strip()

    assert out == str(settings.tls_dir / "ca.pem")
    ca = x509.load_pem_x509_certificate(Path(out).read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize("vendor", ["cisco", "yealink", "panasonic"])
def test_phone_cert_is_signed_by_the_ca_in_the_vendors_style_and_opens_the_tls_port(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path, vendor: str,
) -> None:
    sub = new_subscriber()
    mac = add_device(conn, vendor, [sub])
    colons = ":".join(mac[i:i + 2] for i in range(0, 12, 2))

    autoprov_cli(settings, "tls", "phone-cert", colons, "--vendor", vendor, "--out",
                 str(tmp_path / "phone"), check=True)

    cert_path, key_path = tmp_path / "phone" / "cert.pem", tmp_path / "phone" / "key.pem"
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca = x509.load_pem_x509_certificate((settings.tls_dir / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    if vendor == "cisco":
        st = cert.subject.get_attributes_for_oid(NameOID.STATE_OR_PROVINCE_NAME)[0].value
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert st == mac.upper() and f"MAC: {mac.upper()}" in str(cn)
    reply = client(settings, (cert_path, key_path)).get(
        config_url(settings, device_file(vendor, mac)))
    assert reply.status_code == 200 and sub.password in reply.text


def test_phone_cert_refuses_a_bad_mac(settings: Settings, tmp_path: Path) -> None:
    result = autoprov_cli(settings, "tls", "phone-cert", "00:15:65:zz:00:00", "--vendor",
                          "yealink", "--out", str(tmp_path))
    assert result.returncode != 0
    assert "invalid MAC address" in result.stderr
    assert not (tmp_path / "cert.pem").exists()


@pytest.mark.parametrize("vendor", ["cisco", "yealink", "panasonic"])
def test_render_prints_exactly_what_the_phone_gets(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any, tmp_path: Path, vendor: str,
) -> None:
    sub = new_subscriber()
    mac = add_device(conn, vendor, [sub])
    autoprov_cli(settings, "tls", "phone-cert", mac, "--vendor", vendor, "--out",
                 str(tmp_path), check=True)
    plain = requests.Session()
    plain.trust_env = False
    file = device_file(vendor, mac)

    full = render(settings, mac)
    generic = render(settings, mac.upper(), "--bootstrap")

    served = client(settings, (tmp_path / "cert.pem", tmp_path / "key.pem")).get(
        config_url(settings, file))
    assert full == served.content
    assert sub.password.encode() in full
    assert generic == plain.get(bootstrap_url(settings, file)).content
    assert sub.password.encode() not in generic


def test_render_other_files_and_mistakes(
    settings: Settings, conn: psycopg.Connection[Any], new_subscriber: Any,
) -> None:
    sub = new_subscriber()
    mac = add_device(conn, "yealink", [sub], model="T46G")

    common = render(settings, mac, "--file", "y000000000028.cfg")
    assert common.startswith(b"#!version:1.0.0.1\n") and sub.password.encode() not in common

    for args, message in [
        (("--file", f"{new_mac('yealink')}.cfg"), "is the file of device"),
        (("--file", f"{mac}.xml"), "is a cisco file"),
        (("--file", "../etc/passwd"), "not a file name"),
    ]:
        result = autoprov_cli(settings, "render", mac, *args)
        assert result.returncode != 0 and message in result.stderr, result.stderr
    unknown = autoprov_cli(settings, "render", new_mac("yealink"))
    assert unknown.returncode != 0 and "no device" in unknown.stderr


def test_operators_override_templates_per_vendor_and_per_model(
    settings: Settings, conn: psycopg.Connection[Any], new_subscriber: Any, tmp_path: Path,
) -> None:
    sub = new_subscriber()
    t46u = add_device(conn, "yealink", [sub], model="T46U")
    t46g = add_device(conn, "yealink", [sub], model="T46G")
    (tmp_path / "yealink" / "config" / "T46G").mkdir(parents=True)
    (tmp_path / "yealink" / "config" / "MAC.cfg").write_text(
        "#!version:1.0.0.1\n# site template\n{% include 'yealink/_provisioning.cfg' %}\n"
        "{% for line in lines %}account.{{ line.number }}.password = {{ line.password }}\n"
        "{% endfor %}")
    (tmp_path / "yealink" / "config" / "T46G" / "MAC.cfg").write_text(
        "#!version:1.0.0.1\n# T46G template for {{ mac_colon }}\n")
    overridden = settings.replace(template_dir=str(tmp_path))

    site = render(overridden, t46u).decode()
    model = render(overridden, t46g).decode()

    assert "# site template" in site and f"account.1.password = {sub.password}" in site
    assert "sip.notify_reboot_enable = 0" in site  # the shipped partial still applies
    colons = ":".join(t46g[i:i + 2] for i in range(0, 12, 2))
    assert model == f"#!version:1.0.0.1\n# T46G template for {colons}\n"
    assert "# site template" not in render(settings, t46u).decode()


def test_device_show_tells_the_last_config_fetch(
    provisioning: RunningService, settings: Settings, conn: psycopg.Connection[Any],
    new_subscriber: Any,
) -> None:
    mac = add_device(conn, "yealink", [new_subscriber()])
    assert "last config fetch: never" in autoprov_cli(settings, "device", "show", mac,
                                                      check=True).stdout
    plain = requests.Session()
    plain.trust_env = False
    reply = plain.get(bootstrap_url(settings, f"{mac}.cfg"))
    settle()

    text = autoprov_cli(settings, "device", "show", mac, check=True).stdout
    info = json.loads(autoprov_cli(settings, "device", "show", mac, "--json",
                                   check=True).stdout)

    version = reply.headers["ETag"].strip('"')
    assert f"bootstrap {mac}.cfg version {version} from 127.0.0.1" in text
    fetch = info["last_config_fetch"]
    assert (fetch["port"], fetch["file"], fetch["config_version"], fetch["client_addr"]) == \
        ("bootstrap", f"{mac}.cfg", version, "127.0.0.1")
