"""HTTP load as phones make it: every request on a new connection.

wrk (with `Connection: close`) on plain HTTP; ab on TLS with a client certificate, since wrk
cannot present one (ab opens a new connection per request unless told -k).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

CONNECTIONS = 32


@dataclass
class HttpRun:
    tool: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors, failed and non-2xx responses
    output: str


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, seconds: float) -> HttpRun:
    cmd = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency", "--timeout", "10s",
           "-H", "Connection: close", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30,
                         check=False).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    pct = {p: re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M) for p in (50, 99)}
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    p50, p99 = (_ms(m.group(1), m.group(2)) if m else float("nan") for m in (pct[50], pct[99]))
    return HttpRun("wrk", float(rps.group(1)) if rps else 0.0, p50, p99, errors, out[-1500:])


def ab(url: str, seconds: float, client_pem: Path, body_size: int) -> HttpRun:
    cmd = ["ab", "-q", "-r", "-t", f"{seconds:g}", "-n", "10000000", "-c", str(CONNECTIONS),
           "-E", str(client_pem), url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    out = proc.stdout + proc.stderr
    rps = re.search(r"Requests per second:\s+([\d.]+)", out)
    pct = {p: re.search(rf"^\s+{p}%\s+(\d+)", out, re.M) for p in (50, 99)}
    errors = 0
    for pattern in (r"Failed requests:\s+(\d+)", r"Non-2xx responses:\s+(\d+)"):
        found = re.search(pattern, out)
        errors += int(found.group(1)) if found else 0
    p50, p99 = (float(m.group(1)) if m else float("nan") for m in (pct[50], pct[99]))
    # ab takes the body size from the first response's first read: a server that sends headers
    # and body in separate TLS records (cheroot) gets every response counted as a "Length"
    # failure. Those are not failures when every complete response carried the whole body.
    complete = re.search(r"Complete requests:\s+(\d+)", out)
    body_bytes = re.search(r"HTML transferred:\s+(\d+)", out)
    length = re.search(r"Length: (\d+)", out)
    # (A timed run stops with up to CONNECTIONS responses part-read: their bytes count too.)
    if complete and body_bytes and length and int(complete.group(1)) * body_size \
            <= int(body_bytes.group(1)) <= (int(complete.group(1)) + CONNECTIONS) * body_size:
        errors -= int(length.group(1))
    # Which kind of failure: connect, receive, length (body size differs) or exception.
    kinds = re.search(r"\(Connect: \d+, Receive: \d+, Length: \d+, Exceptions: \d+\)", out)
    return HttpRun("ab", float(rps.group(1)) if rps else 0.0, p50, p99, errors,
                   kinds.group(0) if kinds else "")
