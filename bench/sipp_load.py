"""Driving sipp for the benchmarks: a CSV of phones, REGISTER load at a rate, a NOTIFY answerer.

One sipp client stands for many phones (one per line of the -inf file, in turn); one sipp in
server mode answers the NOTIFYs of every phone whose Contact points at its port.
"""

from __future__ import annotations

import csv
import resource
import secrets
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.world import process_cpu_seconds
from tests.ports import free_port

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
DOMAIN = "bench.test"
# One sipp plays thousands of phones, each of which would have its own socket: its buffers must
# hold a burst to all of them, not sipp's default 64 KB (the kernel caps them at rmem_max).
PHONES_BUFFER = 4 * 1024 * 1024


@dataclass(frozen=True)
class Phones:
    """Subscribers in the database and the same accounts as a sipp -inf file."""

    csv: Path
    users: list[tuple[str, str]]  # (username, password)

    @property
    def count(self) -> int:
        return len(self.users)


def create_phones(conn: psycopg.Connection[Any], work: Path, count: int,
                  prefix: str = "u") -> Phones:
    users = [(f"{prefix}{i:06d}", secrets.token_hex(6)) for i in range(count)]
    with conn.cursor() as cur, cur.copy(
            "COPY subscriber (username, domain, password) FROM STDIN") as copy:
        for user, password in users:
            copy.write_row((user, DOMAIN, password))
    path = work / f"{prefix}-users.csv"
    with path.open("w") as out:
        out.write("SEQUENTIAL\n")
        for user, password in users:
            out.write(f"{user};{DOMAIN};[authentication username={user} password={password}];"
                      f"{password}\n")
    return Phones(path, users)


@dataclass
class LoadRun:
    rate: float
    calls: int
    returncode: int
    elapsed: float
    successful: int
    failed: int
    response_ms: list[float] = field(default_factory=list)
    output: str = ""
    client_cpu: float = 0.0  # seconds of CPU the sipp client itself used

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.successful == self.calls

    def percentile(self, p: float) -> float:
        if not self.response_ms:
            return float("nan")
        if len(self.response_ms) == 1:
            return self.response_ms[0]
        return statistics.quantiles(self.response_ms, n=100, method="inclusive")[int(p) - 1]


def _stat_counts(path: Path) -> tuple[int, int]:
    """(successful, failed) from sipp's -trace_stat file (its last row is the final count)."""
    if not path.exists():
        return 0, 0
    rows = list(csv.reader(path.open(), delimiter=";"))
    if len(rows) < 2:
        return 0, 0
    header, last = rows[0], rows[-1]
    values = dict(zip(header, last, strict=False))
    return int(values.get("SuccessfulCall(C)", 0)), int(values.get("FailedCall(C)", 0))


def _response_times(work: Path) -> list[float]:
    times = []
    for path in work.glob("*_rtt.csv"):
        for row in path.read_text().splitlines()[1:]:
            parts = row.split(";")
            if len(parts) >= 2:
                try:
                    times.append(float(parts[1]))
                except ValueError:
                    continue
    return times


def register_load(proxy: tuple[str, int], phones: Phones, rate: float, calls: int, work: Path,
                  contact_port: int | None = None, expires: int = 3600) -> LoadRun:
    """REGISTER `calls` times at `rate` per second, cycling through the phones."""
    local_port = free_port()
    # The binding's Contact: where the phones' NOTIFYs go (by default, the REGISTERs' port).
    keys = {"contact_port": str(contact_port or local_port), "expires": str(expires)}
    return _client("register-csv", proxy, phones, rate, calls, work, keys, local_port)


def call_load(proxy: tuple[str, int], callers: Phones, rate: float, calls: int,
              work: Path) -> LoadRun:
    """`calls` calls at `rate` per second, each caller (a line of `callers.csv`, see
    calls_csv) calling its callee: INVITE, 407, INVITE with digest, 180, 200, ACK, BYE, 200."""
    return _client("call-uac-csv", proxy, callers, rate, calls, work, {}, free_port())


def calls_csv(phones: Phones, work: Path) -> Phones:
    """The phones as callers, each calling the next one (field4)."""
    path = work / f"{phones.csv.stem}-calls.csv"
    with path.open("w") as out:
        out.write("SEQUENTIAL\n")
        for number, (user, password) in enumerate(phones.users):
            callee = phones.users[(number + 1) % phones.count][0]
            out.write(f"{user};{DOMAIN};[authentication username={user} password={password}];"
                      f"{password};{callee}\n")
    return Phones(path, phones.users)


def callee_server(port: int, work: Path) -> subprocess.Popen[str]:
    """sipp in server mode as every callee (their Contacts point at `port`): rings, answers,
    takes ACK and BYE; runs until terminated."""
    work.mkdir(parents=True, exist_ok=True)
    cmd = ["sipp", "-sf", str(SCENARIOS / "call-uas.xml"), "-i", "127.0.0.1", "-p", str(port),
           "-t", "u1", "-buff_size", str(PHONES_BUFFER), "-nostdin", "-trace_err",
           "-error_file", str(work / "errors.log")]
    return subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, text=True)


def notify_load(phone: tuple[str, int], phones: Phones, calls: int, work: Path,
                rate: float = 5000, limit: int = 500) -> LoadRun:
    """The check-sync dialog of each phone, sent straight to the answerer (no proxy)."""
    return _client("notify-uac", phone, phones, rate, calls, work, {}, free_port(), limit)


def _client(scenario: str, target: tuple[str, int], phones: Phones, rate: float, calls: int,
            work: Path, keys: dict[str, str], local_port: int, limit: int | None = None,
            grace: float = 15.0) -> LoadRun:
    work.mkdir(parents=True, exist_ok=True)
    for old in work.iterdir():
        old.unlink()
    duration = calls / rate
    cmd = [
        "sipp", "-sf", str(SCENARIOS / f"{scenario}.xml"), "-inf", str(phones.csv),
        "-i", "127.0.0.1", "-p", str(local_port), "-t", "u1", "-buff_size", str(PHONES_BUFFER),
        "-r", f"{rate:g}", "-rp", "1000", "-m", str(calls),
        "-l", str(limit or max(100, int(rate * 2))),
        "-recv_timeout", "8000", "-timeout", f"{int(duration + grace)}s", "-timeout_error",
        "-nostdin", "-trace_stat", "-stf", str(work / "stat.csv"), "-fd", "3600",
        "-trace_rtt", "-rtt_freq", "1", "-trace_err", "-error_file", str(work / "errors.log"),
        f"{target[0]}:{target[1]}",
    ]
    for key, value in keys.items():
        cmd[1:1] = ["-key", key, value]
    start, reaped = time.monotonic(), _children_cpu()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True,
                          timeout=duration + grace + 30, check=False)
    elapsed = time.monotonic() - start
    client_cpu = _children_cpu() - reaped  # sipp is the only child reaped meanwhile
    successful, failed = _stat_counts(work / "stat.csv")
    errors = (work / "errors.log").read_text(errors="replace") if (work / "errors.log").exists() \
        else ""
    return LoadRun(rate, calls, proc.returncode, elapsed, successful, failed,
                   _response_times(work), (proc.stdout + proc.stderr)[-2000:] + errors[-2000:],
                   client_cpu)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Answerer:
    """sipp in server mode answering `calls` check-sync NOTIFYs for every phone: each challenged,
    and its answer, in the same dialog, checked (notify-uas-samecall.xml)."""

    def __init__(self, phones: Phones, port: int, calls: int, work: Path,
                 timeout: float, scenario: str = "notify-uas-samecall") -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.work = work
        self.port = port
        self.timeout = timeout
        # The scenario looks passwords up in "users.csv" by user name (field0).
        (work / "users.csv").write_text(phones.csv.read_text())
        cmd = [
            "sipp", "-sf", str(SCENARIOS / f"{scenario}.xml"), "-inf", "users.csv",
            "-infindex", "users.csv", "0", "-key", "domain", DOMAIN,
            "-i", "127.0.0.1", "-p", str(port), "-t", "u1", "-m", str(calls),
            "-buff_size", str(PHONES_BUFFER), "-timeout", f"{int(timeout)}s", "-timeout_error",
            "-nostdin",
            "-trace_msg", "-message_file", str(work / "messages.log"),
            "-trace_stat", "-stf", str(work / "stat.csv"), "-fd", "3600",
            "-trace_err", "-error_file", str(work / "errors.log"),
        ]
        self.proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)

    def counts(self) -> tuple[int, int]:
        return _stat_counts(self.work / "stat.csv")

    def cpu(self) -> float:
        """CPU seconds the answering sipp (all the phones) has used so far."""
        return process_cpu_seconds(self.proc.pid)

    def first_request_at(self) -> float | None:
        """Wall-clock time of the first NOTIFY received, from the message trace."""
        path = self.work / "messages.log"
        if not path.exists():
            return None
        stamp = None
        with path.open(errors="replace") as log:
            for line in log:
                if line.startswith("----------------------------------------------- "):
                    stamp = line.split(" ", 1)[1].strip()
                elif stamp and "message received" in line:
                    return _parse_stamp(stamp)
        return None

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out[-2000:] if out else ""


def _parse_stamp(stamp: str) -> float:
    """sipp's trace timestamps: local time 'YYYY-MM-DD HH:MM:SS.ffffff'."""
    text = " ".join(stamp.split()[:2])
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").timestamp()
