"""Talking to the provisioning service as phones do: real HTTP, real TLS, certificates made here."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import time
from pathlib import Path
from typing import Any

import psycopg
import requests
from cryptography import x509

from autoprov import devices, tls
from autoprov.config import Settings
from provisioning_wsgi.cache import FLUSH_INTERVAL_S

# Vendors' OUIs, so test MACs look like the phones'.
OUI = {"cisco": "0002fd", "yealink": "001565", "panasonic": "0080f0", "snom": "000413",
       "polycom": "0004f2", "grandstream": "000b82", "fanvil": "0c383e"}
MODELS = {"cisco": "SPA504G", "yealink": "T46U", "panasonic": "KX-UT136", "snom": "D785",
          "polycom": "VVX450", "grandstream": "GRP2614", "fanvil": "X4U"}


def new_mac(vendor: str) -> str:
    return OUI[vendor] + secrets.token_hex(3)


def device_file(vendor: str, mac: str) -> str:
    return {"cisco": f"{mac}.xml", "yealink": f"{mac}.cfg",
            "panasonic": f"Config{mac.upper()}.cfg", "snom": f"snomD785-{mac.upper()}.htm",
            "polycom": f"{mac}-autoprov.cfg", "grandstream": f"cfg{mac}.xml",
            "fanvil": f"{mac}.cfg"}[vendor]


def bootstrap_url(settings: Settings, file: str) -> str:
    return f"http://127.0.0.1:{settings.http_port}/device/autoprov/bootstrap/{file}"


def config_url(settings: Settings, file: str) -> str:
    return f"https://127.0.0.1:{settings.https_port}/device/autoprov/config/{file}"


def client(settings: Settings, cert: tuple[Path, Path] | None = None) -> requests.Session:
    """A session that verifies the server with the development CA, as the phones' CA would.

    trust_env is off: REQUESTS_CA_BUNDLE in this environment would replace `verify`.
    """
    session = requests.Session()
    session.trust_env = False
    session.verify = str(tls.dev_ca_path(settings))
    if cert is not None:
        session.cert = (str(cert[0]), str(cert[1]))
    return session


def phone_cert(settings: Settings, directory: Path, vendor: str, mac: str, *,
               ca: tls.Authority | None = None, subject: x509.Name | None = None,
               not_before: dt.datetime | None = None,
               not_after: dt.datetime | None = None) -> tuple[Path, Path]:
    """A phone client certificate, by default as `autoprov tls phone-cert` makes it."""
    cert, key = tls.issue_phone(ca or tls.dev_ca(settings),
                                subject or tls.phone_subject(vendor, mac),
                                not_before=not_before, not_after=not_after)
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "cert.pem", directory / "key.pem"
    tls.write_pair(cert, key, *paths)
    return paths


def add_device(conn: psycopg.Connection[Any], vendor: str, subscribers: list[Any], *,
               model: str | None = None, mac: str | None = None,
               display_names: dict[int, str] | None = None) -> str:
    mac = mac or new_mac(vendor)
    specs = [devices.LineSpec(n, s.username, s.domain) for n, s in enumerate(subscribers, 1)]
    devices.add(conn, mac, vendor, model or MODELS[vendor], specs)
    for number, name in (display_names or {}).items():
        conn.execute(
            "UPDATE autoprov.device_line SET display_name = %s FROM autoprov.device d"
            " WHERE d.id = device_id AND d.mac = %s AND line_no = %s", (name, mac, number))
    return mac


def settle() -> None:
    """Wait until the service has written the fetches it answered (it records them in the
    background, every cache.FLUSH_INTERVAL_S)."""
    time.sleep(FLUSH_INTERVAL_S * 10)


def fetches(conn: psycopg.Connection[Any], mac: str) -> list[tuple[Any, ...]]:
    settle()
    return conn.execute(
        "SELECT f.port, f.file, f.config_version, host(f.client_addr), f.user_agent"
        "  FROM autoprov.config_fetch f JOIN autoprov.device d ON d.id = f.device_id"
        " WHERE d.mac = %s ORDER BY f.id", (mac,)).fetchall()


def children(pid: int) -> set[int]:
    """The processes pid started (autoprov serve: its workers and its publisher)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(p) for p in (task / "children").read_text().split()}
    return found


def publisher_pid(log: str) -> int:
    """The process that published the fleet's files (the latest one, if it was restarted)."""
    pids = re.findall(r"autoprov-provisioning\[(\d+)\] INFO published the files of", log)
    assert pids, "the publisher never published"
    return int(pids[-1])


def app_workers(pid: int, log: str) -> set[int]:
    """autoprov serve's worker processes (the app), without its publisher."""
    return children(pid) - {publisher_pid(log)}
