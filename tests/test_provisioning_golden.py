"""Golden files: byte for byte what each vendor's phones get, per model, file and port.

After an intended template change, regenerate them and review the diff of tests/golden/:
    UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_provisioning_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autoprov.config import Settings
from provisioning_wsgi import vendors
from provisioning_wsgi.render import Device, Line, Renderer

GOLDEN = Path(__file__).parent / "golden"
SETTINGS = Settings(public_host="prov.example.test", http_port=1445, https_port=1444,
                    sip_listen=("udp:192.0.2.10:5060", "tcp:192.0.2.10:5060"))
MODELS = {
    "cisco": {"SPA504G": "0002fd0a0b0c", "SPA525G2": "0002fd0d0e0f"},
    "yealink": {"T46U": "0015650a0b0c", "T46G": "0015650d0e0f", "T54W": "001565101112"},
    "panasonic": {"KX-UT136": "0080f00a0b0c", "KX-HDV230": "0080f00d0e0f"},
}
LINES = [Line(1, "alice", "example.test", "s3cret-A", "Alice Example"),
         Line(2, "bob", "example.test", "s3cret-B", "")]

CASES = [
    (vendor, model, mac, port, file)
    for vendor, models in MODELS.items()
    for model, mac in models.items()
    for file in vendors.get(vendor).files_for(model, mac)
    for port in ("bootstrap", "config")
]


def render(vendor: str, model: str, mac: str, port: str, file: str) -> bytes:
    requested = vendors.parse(file)
    assert requested is not None and requested.vendor.name == vendor
    own = requested.mac is not None
    device = Device(1, mac, vendor, model) if own else None
    renderer = Renderer(SETTINGS)
    if port == "bootstrap":
        return renderer.bootstrap(requested, device).body
    return renderer.config(requested, device, LINES if own else []).body


@pytest.mark.parametrize("vendor,model,mac,port,file", CASES,
                         ids=["/".join(c[:2] + c[3:]) for c in CASES])
def test_golden(vendor: str, model: str, mac: str, port: str, file: str) -> None:
    path = GOLDEN / vendor / model / port / file
    body = render(vendor, model, mac, port, file)
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 to create it"
    assert body == path.read_bytes()


def test_every_golden_file_is_still_a_case() -> None:
    """A renamed model or file must not leave a stale golden file behind."""
    expected = {GOLDEN / v / m / p / f for v, m, _mac, p, f in CASES}
    assert {p for p in GOLDEN.rglob("*") if p.is_file() and p.name != ".gitattributes"} \
        == expected


def test_formats_hold_in_every_golden_file() -> None:
    for vendor, model, _mac, port, file in CASES:
        body = (GOLDEN / vendor / model / port / file).read_bytes()
        if vendor == "panasonic":
            assert body.startswith(b"# Panasonic SIP Phone Standard Format File #")
            assert body.endswith(b"\r\n\r\n")
            assert b"\n" not in body.replace(b"\r\n", b"")
        elif vendor == "yealink":
            assert body.startswith(b"#!version:1.0.0.1\n")
            assert b"\r" not in body
        else:
            assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<flat-profile>\n')
        if port == "bootstrap":
            assert b"s3cret" not in body and b"alice" not in body
