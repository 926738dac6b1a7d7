"""Benchmark 4: mass reboot. Every phone of a fleet fetches its bootstrap file over plain HTTP,
then its full config over TLS with its own client certificate, all at once.

The client is one curl in parallel mode (C, so the load generator takes little of the machine's
two cores), a new connection per request and no TLS session reuse, as phones after a power cut.
Baseline: the same requests against nginx serving the very bytes autoprov served, as files.
"""

from __future__ import annotations

import resource
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from autoprov import tls
from bench import nginx
from bench.report import Section, Verdict
from bench.sipp_load import DOMAIN
from bench.world import world
from tests.ports import free_port
from tests.provisioning_helpers import MODELS, OUI, device_file

TARGET_S = 30.0
VENDORS = ("yealink", "cisco", "panasonic")
PARALLEL = 64
BOOTSTRAP = "/device/autoprov/bootstrap/"
CONFIG = "/device/autoprov/config/"


@dataclass(frozen=True)
class Sizes:
    phones: int = 10000

    @classmethod
    def quick(cls) -> Sizes:
        return cls(phones=1000)


@dataclass
class Fleet:
    phones: list[tuple[str, str]]  # (vendor, mac)
    certs: Path  # <mac>.pem and <mac>.key


def _issue(ca_cert: Path, ca_key: Path, phones: list[tuple[str, str]], out: Path) -> None:
    ca = tls.load_authority(ca_cert, ca_key)
    for vendor, mac in phones:
        cert, key = tls.issue_phone(ca, tls.phone_subject(vendor, mac))
        tls.write_pair(cert, key, out / f"{mac}.pem", out / f"{mac}.key")


def create_fleet(conninfo: str, ca_cert: Path, ca_key: Path, count: int, base: Path) -> Fleet:
    import psycopg

    phones = [(VENDORS[i % 3], f"{OUI[VENDORS[i % 3]]}{i:06x}") for i in range(count)]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        with conn.cursor() as cur, cur.copy(
                "COPY subscriber (username, domain, password) FROM STDIN") as copy:
            for _vendor, mac in phones:
                copy.write_row((f"r{mac}", DOMAIN, f"pw-{mac}"))
        with conn.cursor() as cur, cur.copy(
                "COPY autoprov.device (mac, vendor, model) FROM STDIN") as copy:
            for vendor, mac in phones:
                copy.write_row((mac, vendor, MODELS[vendor]))
        conn.execute("INSERT INTO autoprov.device_line (device_id, line_no, subscriber_id)"
                     " SELECT d.id, 1, s.id FROM autoprov.device d"
                     "   JOIN subscriber s ON s.username = 'r' || d.mac")
    certs = base / "certs"
    certs.mkdir()
    chunks = [phones[i::2] for i in range(2)]
    with ProcessPoolExecutor(2) as pool:
        for done in [pool.submit(_issue, ca_cert, ca_key, chunk, certs) for chunk in chunks]:
            done.result()
    return Fleet(phones, certs)


def _curl_config(fleet: Fleet, plain: int, secure: int, ca: Path, save: Path | None) -> str:
    lines = []
    for vendor, mac in fleet.phones:
        file = device_file(vendor, mac)
        for url, extra in (
            (f"http://127.0.0.1:{plain}{BOOTSTRAP}{file}", []),
            (f"https://127.0.0.1:{secure}{CONFIG}{file}",
             [f'cert = "{fleet.certs}/{mac}.pem"', f'key = "{fleet.certs}/{mac}.key"',
              f'cacert = "{ca}"']),
        ):
            target = save / url.split("/", 3)[3] if save else Path("/dev/null")
            lines += [f'url = "{url}"', f'output = "{target}"', "create-dirs",
                      'header = "Connection: close"',
                      'write-out = "%{http_code}\\n"', *extra, "next"]
    return "\n".join(lines[:-1]) + "\n"


@dataclass
class Reboot:
    seconds: float
    ok: int
    requests: int
    codes: dict[str, int]
    client_cpu: float  # seconds of CPU the load generator (curl) used itself


def reboot(fleet: Fleet, plain: int, secure: int, ca: Path, work: Path,
           save: Path | None = None) -> Reboot:
    config = work / f"curl-{plain}.cfg"
    config.write_text(_curl_config(fleet, plain, secure, ca, save))
    cmd = ["curl", "--parallel", "--parallel-max", str(PARALLEL), "--no-sessionid", "-s",
           "-K", str(config)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    codes: dict[str, int] = {}
    for code in proc.stdout.split():
        codes[code] = codes.get(code, 0) + 1
    return Reboot(seconds, codes.get("200", 0), 2 * len(fleet.phones), codes, client_cpu)


def run(quick: bool) -> Section:
    sizes = Sizes.quick() if quick else Sizes()
    section = Section(f"4. Mass reboot: {sizes.phones} phones fetch bootstrap, then full config")
    started = time.monotonic()
    with world("reboot") as w:
        settings = w.settings()
        tls.ensure_dev_material(settings)
        ca_cert = tls.dev_ca_path(settings)
        t0 = time.monotonic()
        fleet = create_fleet(w.cluster.url(), ca_cert, settings.tls_dir / tls.CA_KEY,
                             sizes.phones, w.base)
        setup = time.monotonic() - t0
        w.provisioning(settings)
        served = w.base / "served"
        result = reboot(fleet, settings.http_port, settings.https_port, ca_cert, w.base, served)
        with w.connect() as conn:
            row = conn.execute("SELECT count(*) FILTER (WHERE port = 'bootstrap'),"
                               " count(*) FILTER (WHERE port = 'tls')"
                               " FROM autoprov.config_fetch").fetchone()
        recorded = (int(row[0]), int(row[1])) if row else (0, 0)
        ng_plain, ng_tls = free_port(), free_port()
        files = {"/" + str(p.relative_to(served)): p.read_bytes()
                 for p in served.rglob("*") if p.is_file()}
        w.running.append(nginx.start(settings, w.base / "nginx", files, ng_plain, ng_tls))
        baseline = reboot(fleet, ng_plain, ng_tls, ca_cert, w.base)
    section.seconds = time.monotonic() - started
    _describe(section, sizes, result, baseline, recorded, setup)
    return section


def _describe(section: Section, sizes: Sizes, r: Reboot, base: Reboot,
              recorded: tuple[int, int], setup: float) -> None:
    complete = r.ok == r.requests
    section.verdicts.append(Verdict(
        f"mass reboot of {sizes.phones} phones under {TARGET_S:.0f} s",
        f"{r.seconds:.1f} s" + ("" if complete else f" ({r.requests - r.ok} requests not 200)"),
        complete and r.seconds < TARGET_S))
    section.add(
        f"{sizes.phones} phones, a third each Yealink, Cisco SPA and Panasonic, one line each, "
        "each with its own client certificate from the development CA. Each phone: `GET "
        f"{BOOTSTRAP}<file>` on the plain port, then `GET {CONFIG}<file>` on the TLS port "
        f"presenting its certificate. One `curl --parallel --parallel-max {PARALLEL} "
        "--no-sessionid` runs them all (a new connection per request, `Connection: close`, a "
        "full TLS handshake each); a phone's two requests are started in order but may "
        "overlap. Baseline: the same curl run against nginx serving, as files, the exact bytes "
        "autoprov served.", "")
    rows = [
        ["autoprov serve", f"{r.seconds:.1f} s", f"{r.requests / r.seconds:.0f}",
         f"{r.client_cpu:.1f} s", f"{r.ok}/{r.requests}",
         ", ".join(f"{k}: {v}" for k, v in sorted(r.codes.items()))],
        ["nginx, static files", f"{base.seconds:.1f} s", f"{base.requests / base.seconds:.0f}",
         f"{base.client_cpu:.1f} s", f"{base.ok}/{base.requests}",
         ", ".join(f"{k}: {v}" for k, v in sorted(base.codes.items()))],
        ["**ratio nginx time / autoprov time**", f"**{base.seconds / r.seconds:.2f}**", "", "",
         "", ""],
    ]
    section.table(["server", "total time", "requests/s", "CPU of curl itself", "200 OK",
                   "status codes"], rows)
    section.add("The phones' side runs on the same 2 cores: curl loads each phone's own key and "
                "certificate and does its half of every handshake, and the CPU it used is in the "
                "table. The machine has 2 s of CPU per second of wall time; what curl uses is "
                "not available to the server.")
    section.add(f"Fetches recorded in `autoprov.config_fetch`: {recorded[0]} bootstrap, "
                f"{recorded[1]} TLS. Setting up the fleet (rows and {sizes.phones} client "
                f"certificates) took {setup:.0f} s and is not counted.")
