"""A real user agent (Debian's baresip) through the proxy: it gets the check-sync NOTIFY over UDP
and over TLS (whatever it answers is the recorded outcome), and one baresip calls another with
RTP flowing both ways (opus, the ausine source, the aufile player: no sound card)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from autoprov.config import Settings
from tests.conftest import RunningService, autoprov_cli, eventually, own_proxy, random_mac
from tests.ports import free_port, free_sip_ua_port

SERVER_ID = 23  # a node id of its own (tests/conftest.py own_proxy)


@pytest.fixture
def proxy(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, int, int]]:
    udp, tls = free_port(), free_port()
    with own_proxy(settings, tmp_path, SERVER_ID, f"udp:127.0.0.1:{udp}",
                   f"tls:127.0.0.1:{tls}") as own:
        yield own, udp, tls


def _baresip(work: Path, account: str, seconds: int) -> subprocess.Popen[str]:
    work.mkdir()
    (work / "config").write_text(
        f"sip_listen\t\t127.0.0.1:{free_sip_ua_port()}\n"
        "net_interface\t\t127.0.0.1\n"
        "sip_verify_server\tno\n"
        "module_path\t\t/usr/lib/baresip/modules\n"
        "module\t\t\tg711.so\n"
        "module\t\t\tausine.so\n"
        "module_app\t\taccount.so\n"
        "audio_player\t\tausine,nil\naudio_source\t\tausine,440\naudio_alert\t\tausine,nil\n")
    (work / "accounts").write_text(account + "\n")
    return subprocess.Popen(["baresip", "-4", "-s", "-f", str(work), "-t", str(seconds)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("transport", ["udp", "tls"])
def test_baresip_gets_the_check_sync_and_its_answer_is_the_outcome(
    proxy: tuple[Settings, int, int], conn: psycopg.Connection[Any], new_subscriber: Any,
    tmp_path: Path, transport: str,
) -> None:
    own, udp, tls = proxy
    sub = new_subscriber()
    mac = random_mac()
    autoprov_cli(own, "device", "add", mac, "--vendor", "yealink", "--model", "T46U",
                 "--line", f"1={sub.aor}", check=True)
    port = udp if transport == "udp" else tls
    account = (f"<sip:{sub.aor};transport={transport}>;auth_pass={sub.password};"
               f"outbound=\"sip:127.0.0.1:{port};transport={transport}\";regint=300")
    ua = _baresip(tmp_path / "baresip", account, 30)

    def outcome() -> list[tuple[Any, ...]]:
        return conn.execute("SELECT outcome, code FROM autoprov.resync_status WHERE mac = %s"
                            " AND outcome IS NOT NULL AND outcome NOT IN ('queued', 'sent')",
                            (mac,)).fetchall()

    # Its first REGISTER sends the device's first check-sync.
    recorded = eventually(outcome, timeout=10)
    rows = conn.execute("SELECT socket FROM location WHERE username = %s",
                        (sub.username,)).fetchall()
    ua.terminate()  # it unregisters, and its trace is complete
    out, _ = ua.communicate(timeout=30)
    assert recorded, out[-3000:]
    [(state, code)] = recorded
    notify = re.search(r"NOTIFY sip:\S+ SIP/2.0.*?Event: check-sync", out, re.S)
    assert notify, out[-3000:]
    answered = re.findall(r"SIP/2.0 (\d{3}) [^\r\n]*\r?\n(?:[^\r\n]+\r?\n)*?CSeq: \d+ NOTIFY",
                          out)
    assert answered and int(answered[-1]) == code, (answered, code, out[-3000:])
    assert state == ("accepted" if 200 <= code < 300 else "refused")
    assert rows and rows[0][0].startswith(f"{transport}:127.0.0.1:{port}")


def _call_config(work: Path, account: str, heard: Path) -> None:
    work.mkdir()
    (work / "config").write_text(
        f"sip_listen\t\t127.0.0.1:{free_sip_ua_port()}\n"
        "net_interface\t\t127.0.0.1\n"
        "module_path\t\t/usr/lib/baresip/modules\n"
        "module\t\t\topus.so\n"  # 48 kHz, as the ausine source
        "module\t\t\tausine.so\n"
        "module\t\t\taufile.so\n"
        "module\t\t\trtcpsummary.so\n"
        "module_app\t\taccount.so\n"
        "module_app\t\tmenu.so\n"
        "audio_player\t\taufile," + str(heard) + "\n"
        "audio_source\t\tausine,440\n"
        "audio_alert\t\taufile,/dev/null\n"
        "rtp_stats\t\tyes\n")
    (work / "accounts").write_text(account + "\n")


@pytest.fixture
def relaying_proxy(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, int]]:
    """A proxy of its own with the media relay (rtpengine_socket), started as `make run` does."""
    udp = free_port()
    with own_proxy(settings, tmp_path, SERVER_ID + 10, f"udp:127.0.0.1:{udp}",
                   rtpengine_socket=f"udp:127.0.0.1:{free_port()}",
                   rtpengine_port_min=42000, rtpengine_port_max=42999) as own:
        yield own, udp


def test_baresip_calls_baresip_through_the_proxy_with_rtp_flowing(
    kamailio: RunningService, conn: psycopg.Connection[Any], sip_proxy: tuple[str, int],
    new_subscriber: Any, tmp_path: Path,
) -> None:
    local, remote = _rtp_ports(_baresip_call(conn, sip_proxy, new_subscriber, tmp_path))
    assert local == remote  # direct: each side sends to the other's own port


def test_baresip_calls_baresip_with_media_through_the_relay(
    relaying_proxy: tuple[Settings, int], conn: psycopg.Connection[Any], new_subscriber: Any,
    tmp_path: Path,
) -> None:
    _own, udp = relaying_proxy
    local, remote = _rtp_ports(_baresip_call(conn, ("127.0.0.1", udp), new_subscriber, tmp_path))
    # Each side sent its RTP to the relay (the SDP it got named rtpengine's ports), not to the
    # other side.
    assert not local & remote and all(42000 <= port <= 42999 for port in remote), (local, remote)


def _rtp_ports(output: str) -> tuple[set[int], set[int]]:
    """The local and the remote RTP ports of both sides, from their X-RTP-Stat (IP=local,remote)."""
    pairs = re.findall(r"X-RTP-Stat: [^\r\n]*;IP=[^:,]+:(\d+),[^:,]+:(\d+)", output)
    assert len(pairs) >= 2, output[-3000:]
    return {int(a) for a, _ in pairs}, {int(b) for _, b in pairs}


def _baresip_call(conn: psycopg.Connection[Any], sip_proxy: tuple[str, int],
                  new_subscriber: Any, tmp_path: Path) -> str:
    """Two baresips register, one calls the other (auto answer), RTP flows both ways; both
    outputs."""
    alice, bob = new_subscriber(), new_subscriber()
    outbound = f'outbound="sip:{sip_proxy[0]}:{sip_proxy[1]};transport=udp"'
    _call_config(tmp_path / "bob", f"<sip:{bob.aor}>;auth_pass={bob.password};{outbound};"
                 "answermode=auto;regint=300", tmp_path / "bob.wav")
    _call_config(tmp_path / "alice", f"<sip:{alice.aor}>;auth_pass={alice.password};"
                 f"{outbound};regint=300", tmp_path / "alice.wav")
    callee = subprocess.Popen(["baresip", "-4", "-s", "-f", str(tmp_path / "bob"), "-t", "12"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        assert eventually(lambda: conn.execute("SELECT 1 FROM location WHERE username = %s",
                                               (bob.username,)).fetchall(), timeout=5)
        caller = subprocess.run(
            ["baresip", "-4", "-s", "-f", str(tmp_path / "alice"), "-t", "6",
             "-e", f"/dial sip:{bob.aor}"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    finally:
        callee.terminate()
        callee_out, _ = callee.communicate(timeout=30)
    print(caller.stdout[-4000:])
    both = caller.stdout + callee_out
    assert "Call established" in caller.stdout, caller.stdout[-3000:]
    assert "incoming rtp for 'audio' established" in callee_out, callee_out[-3000:]
    assert "incoming rtp for 'audio' established" in caller.stdout, caller.stdout[-3000:]
    # The hang-up (BYE, through the proxy) carries each side's RTP counts (rtp_stats).
    stats = re.findall(r"X-RTP-Stat: [^\r\n]*;PR=(\d+);PS=(\d+);", both)
    assert stats and all(int(received) > 0 and int(sent) > 0 for received, sent in stats), \
        stats
    return both
