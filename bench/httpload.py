"""HTTP load as phones make it: every request on a new connection.

wrk (with `Connection: close`) on plain HTTP; bench/tlsload.c on TLS with a client certificate,
since wrk cannot present one (and ab, which can, was the bottleneck: see tlsload.c).
"""

from __future__ import annotations

import re
import resource
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from autoprov.config import ROOT

CONNECTIONS = 32


@dataclass
class HttpRun:
    tool: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors, failed and non-2xx responses
    output: str
    client_cores: float = float("nan")  # CPU the load generator used per second of the run
    resumed: float = float("nan")  # the share of TLS handshakes that resumed a session
    server_cores: dict[str, float] = field(default_factory=dict)  # set by the caller, by part


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, seconds: float) -> HttpRun:
    cmd = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency", "--timeout", "10s",
           "-H", "Connection: close", url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30,
                         check=False).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cores = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / seconds
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    pct = {p: re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M) for p in (50, 99)}
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    p50, p99 = (_ms(m.group(1), m.group(2)) if m else float("nan") for m in (pct[50], pct[99]))
    return HttpRun("wrk", float(rps.group(1)) if rps else 0.0, p50, p99, errors, out[-1500:],
                   cores)


def compiled(name: str) -> Path:
    """bench/NAME.c compiled against OpenSSL, when missing or older than its source."""
    source = Path(__file__).with_name(f"{name}.c")
    binary = ROOT / "var" / "bench" / name
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        binary.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(source), "-lssl",
                        "-lcrypto"], check=True)
    return binary


def tls(port: int, path: str, seconds: float, ca: Path, cert: Path, key: Path,
        mode: str) -> HttpRun:
    """bench/tlsload.c against 127.0.0.1:PORT, presenting CERT; mode "resume" (a new connection
    per request, the TLS session resumed) or "keepalive" (requests one after another)."""
    cmd = [str(compiled("tlsload")), "127.0.0.1", str(port), str(ca), str(cert), str(key), path,
           str(CONNECTIONS), f"{seconds:g}", mode]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    values = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    if proc.returncode != 0 or "requests" not in values:
        return HttpRun(f"tlsload {mode}", 0.0, float("nan"), float("nan"), 1,
                       proc.stderr.strip()[-300:] or f"exit {proc.returncode}")
    took = float(values["seconds"])
    resumed = int(values["resumed"]) / max(1, int(values["handshakes"]))
    return HttpRun(f"tlsload {mode}", int(values["requests"]) / took, float(values["p50_ms"]),
                   float(values["p99_ms"]), int(values["errors"]),
                   " ".join(proc.stderr.split())[-300:], float(values["cpu_s"]) / took, resumed)
