"""Which SIP transport the configs tell phones: sip_transport, or a device's own, in each
vendor's keys, with the port of the proxy's socket for it."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from autoprov import config
from autoprov.config import Settings
from provisioning_wsgi import vendors
from provisioning_wsgi.render import Device, Line, Renderer
from tests.conftest import autoprov_cli, random_mac

LISTEN = ("udp:192.0.2.10:5060", "tcp:192.0.2.10:5070", "tls:192.0.2.10:5061")
LINES = [Line(1, "alice", "example.test", "s3cret-A", "Alice")]
# What each vendor's file says for line 1 over each transport.
EXPECTED = {
    "yealink": ("001565000001", "T46U", "001565000001.cfg", {
        "udp": ["account.1.sip_server.1.transport_type = 0", "account.1.sip_server.1.port = 5060"],
        "tcp": ["account.1.sip_server.1.transport_type = 1", "account.1.sip_server.1.port = 5070"],
        "tls": ["account.1.sip_server.1.transport_type = 2", "account.1.sip_server.1.port = 5061",
                "account.1.outbound_proxy.1.port = 5061"],
    }),
    "cisco": ("0002fd000001", "SPA504G", "0002fd000001.xml", {
        "udp": ["<SIP_Transport_1_>UDP</SIP_Transport_1_>", "prov.example.test:5060<"],
        "tcp": ["<SIP_Transport_1_>TCP</SIP_Transport_1_>", "prov.example.test:5070<"],
        "tls": ["<SIP_Transport_1_>TLS</SIP_Transport_1_>", "prov.example.test:5061<"],
    }),
    "panasonic": ("0080f0000001", "KX-UT136", "Config0080F0000001.cfg", {
        "udp": ['SIP_TRANSPORT_1="0"', 'SIP_PRXY_PORT_1="5060"'],
        "tcp": ['SIP_TRANSPORT_1="1"', 'SIP_PRXY_PORT_1="5070"'],
        "tls": ['SIP_TRANSPORT_1="2"', 'SIP_PRXY_PORT_1="5061"'],
    }),
    "snom": ("000413000001", "D785", "snomD785-000413000001.htm", {
        "udp": ['<user_outbound idx="1" perm="R">prov.example.test:5060;transport=udp<'],
        "tcp": ['<user_outbound idx="1" perm="R">prov.example.test:5070;transport=tcp<'],
        "tls": ['<user_outbound idx="1" perm="R">prov.example.test:5061;transport=tls<'],
    }),
    "polycom": ("0004f2000001", "VVX450", "0004f2000001-autoprov.cfg", {
        "udp": ['reg.1.server.1.transport="UDPOnly"', 'reg.1.outboundProxy.port="5060"'],
        "tcp": ['reg.1.server.1.transport="TCPOnly"', 'reg.1.outboundProxy.port="5070"'],
        "tls": ['reg.1.server.1.transport="TLS"', 'reg.1.outboundProxy.port="5061"',
                'reg.1.outboundProxy.transport="TLS"'],
    }),
    "grandstream": ("000b82000001", "GRP2614", "cfg000b82000001.xml", {
        "udp": ["<P130>0</P130>", "<P48>prov.example.test:5060</P48>"],
        "tcp": ["<P130>1</P130>", "<P48>prov.example.test:5070</P48>"],
        "tls": ["<P130>2</P130>", "<P48>prov.example.test:5061</P48>"],
    }),
    "fanvil": ("0c383e000001", "X4U", "0c383e000001.cfg", {
        "udp": ["SIP1 Transport          :0", "SIP1 Proxy Port         :5060"],
        "tcp": ["SIP1 Transport          :1", "SIP1 Proxy Port         :5070"],
        "tls": ["SIP1 Transport          :3", "SIP1 Proxy Port         :5061"],
    }),
}


def _config(settings: Settings, vendor: str, own: str | None = None) -> str:
    mac, model, file, _ = EXPECTED[vendor]
    requested = vendors.parse_as(vendors.get(vendor), file)
    assert requested is not None and requested.vendor.name == vendor, file
    device = Device(1, mac, vendor, model, own)
    return Renderer(settings).config(requested, device, LINES).body.decode()


@pytest.mark.parametrize("vendor", sorted(EXPECTED))
@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_sip_transport_is_in_each_vendors_keys_with_its_port(vendor: str,
                                                              transport: str) -> None:
    settings = Settings(public_host="prov.example.test", sip_listen=LISTEN,
                        sip_transport=transport)
    body = _config(settings, vendor)
    for expected in EXPECTED[vendor][3][transport]:
        assert expected in body, (expected, body)


@pytest.mark.parametrize("vendor", sorted(EXPECTED))
def test_a_devices_own_transport_wins(vendor: str) -> None:
    settings = Settings(public_host="prov.example.test", sip_listen=LISTEN, sip_transport="udp")
    body = _config(settings, vendor, own="tls")
    for expected in EXPECTED[vendor][3]["tls"]:
        assert expected in body


def test_without_sip_transport_the_first_socket_decides() -> None:
    settings = Settings(public_host="prov.example.test", sip_listen=LISTEN[::-1])
    assert "account.1.sip_server.1.transport_type = 2" in _config(settings, "yealink")


def test_a_transport_the_proxy_does_not_listen_on_is_refused(tmp_path: Any) -> None:
    path = tmp_path / "autoprov.toml"
    path.write_text('sip_listen = ["udp:127.0.0.1:5060"]\nsip_transport = "tls"\n')
    with pytest.raises(config.ConfigError, match="sip_listen has no such socket"):
        config.load({"AUTOPROV_CONFIG": str(path)})
    path.write_text('sip_transport = "sctp"\n')
    with pytest.raises(config.ConfigError, match="not udp, tcp or tls"):
        config.load({"AUTOPROV_CONFIG": str(path)})


def test_changing_a_devices_transport_in_sql_resyncs_it(
    settings: Settings, conn: psycopg.Connection[Any], new_subscriber: Any,
) -> None:
    sub = new_subscriber()
    mac = random_mac()
    autoprov_cli(settings, "device", "add", mac, "--vendor", "yealink", "--model", "T46U",
                 "--line", f"1={sub.aor}", check=True)
    conn.execute("DELETE FROM autoprov.resync_request r USING autoprov.device d"
                 " WHERE d.id = r.device_id AND d.mac = %s", (mac,))

    conn.execute("UPDATE autoprov.device SET sip_transport = 'tls' WHERE mac = %s", (mac,))

    rows = conn.execute("SELECT r.reason FROM autoprov.resync_request r"
                        " JOIN autoprov.device d ON d.id = r.device_id WHERE d.mac = %s",
                        (mac,)).fetchall()
    assert rows == [("config-change",)]
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE autoprov.device SET sip_transport = 'sctp' WHERE mac = %s", (mac,))
