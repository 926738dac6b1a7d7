"""Golden files: byte for byte what each vendor's phones get, per model, file and port.

After an intended template change, regenerate them and review the diff of tests/golden/:
    UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_provisioning_golden.py
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
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
    "snom": {"D785": "0004130a0b0c", "D865": "0004130d0e0f"},
    "polycom": {"VVX450": "0004f20a0b0c", "VVX250": "0004f20d0e0f"},
    "grandstream": {"GRP2614": "000b820a0b0c", "GXP2170": "000b820d0e0f"},
    "fanvil": {"X4U": "0c383e0a0b0c", "X6U": "0c383e0d0e0f"},
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
    requested = vendors.parse_as(vendors.get(vendor), file)
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


# How each vendor's files begin and end, and whether they are XML (then well-formed).
FORMATS = {
    "panasonic": (b"# Panasonic SIP Phone Standard Format File #", b"\r\n\r\n", False),
    "yealink": (b"#!version:1.0.0.1\n", b"\n", False),
    "cisco": (b'<?xml version="1.0" encoding="UTF-8"?>\n<flat-profile>\n', b"\n", True),
    "snom": (b'<?xml version="1.0" encoding="utf-8"?>\n<settings>\n', b"</settings>\n", True),
    "polycom": (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n', b"/>\n", True),
    "grandstream": (b'<?xml version="1.0" encoding="UTF-8"?>\n<gs_provision version="1">\n',
                    b"</gs_provision>\n", True),
    "fanvil": (b"<<VOIP CONFIG FILE>>Version:2.0000000000\r\n", b"<<END OF FILE>>\r\n", False),
}


def test_formats_hold_in_every_golden_file() -> None:
    assert set(FORMATS) == set(vendors.VENDORS)
    for vendor, model, _mac, port, file in CASES:
        body = (GOLDEN / vendor / model / port / file).read_bytes()
        start, end, xml = FORMATS[vendor]
        assert body.startswith(start) and body.endswith(end), (vendor, file)
        if xml:
            ET.fromstring(body)  # noqa: S314 (our own golden files): well-formed
        elif end.endswith(b"\r\n"):
            assert b"\n" not in body.replace(b"\r\n", b""), (vendor, file)
        else:
            assert b"\r" not in body, (vendor, file)
        if port == "bootstrap":
            assert b"s3cret" not in body and b"alice" not in body
