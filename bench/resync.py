"""Benchmark 3: resync fan-out. Thousands of registered phones, one SQL statement asks to resync
all of them; how soon the first NOTIFY reaches a phone, and how soon every outcome is recorded.

The phones are one sipp client registering every account (Contacts all pointing at one port) and
one sipp in server mode on that port, which challenges each NOTIFY with 401 and checks the retry's
digest against that phone's own password. Baseline: the same phones fed the same dialogs by a
sipp client directly (no proxy, no database), i.e. how fast the phone side alone can go.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench import sipp_load
from bench.report import Section, Verdict
from bench.world import PGSS, World, cpu_seconds, postgres_cpu_seconds, world
from tests.ports import free_port

FIRST_TARGET_MS = 50.0
ALL_TARGET_S = 10.0
RATIO_TARGET = 0.8
SHM_MB = 1024
WORKERS = 2
# The baseline's sipp sends as fast as it can: a rate it never reaches, this many at once.
BASELINE_RATE, BASELINE_LIMIT = 100000, 2000
RESYNC_ALL = "SELECT count(autoprov.request_resync(mac)) FROM autoprov.device"
FINAL = ("accepted", "refused", "challenge_failed", "no_answer")


@dataclass(frozen=True)
class Sizes:
    phones: int = 50000
    register_rate: float = 3000.0
    timeout: float = 120.0

    @classmethod
    def quick(cls) -> Sizes:
        return cls(phones=2000, timeout=30.0)


def create_devices(conn: psycopg.Connection[Any], prefix: str) -> None:
    """One Yealink per subscriber `prefix*`, line 1; the triggers' own resync requests dropped."""
    conn.execute(
        "INSERT INTO autoprov.device (mac, vendor, model)"
        " SELECT '0015' || lpad(to_hex(n), 8, '0'), 'yealink', 'T46U'"
        "   FROM generate_series(1, (SELECT count(*) FROM subscriber"
        "                            WHERE username LIKE %s)) n", (prefix + "%",))
    conn.execute(
        "INSERT INTO autoprov.device_line (device_id, line_no, subscriber_id)"
        " SELECT d.id, 1, s.id"
        "   FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM autoprov.device) d"
        "   JOIN (SELECT id, row_number() OVER (ORDER BY username) AS rn FROM subscriber"
        "          WHERE username LIKE %s) s USING (rn)", (prefix + "%",))
    # Creating a line asks for a resync; these phones are not registered yet, so start clean.
    conn.execute("DELETE FROM autoprov.resync_request")


@dataclass
class Outcome:
    statement_s: float
    first_wire_ms: float | None  # from the statement's commit to the first NOTIFY at a phone
    first_db_ms: float | None  # from the commit to the first NOTIFY claimed (sent_at)
    all_done_s: float | None  # from the commit to the last outcome recorded
    states: dict[str, int]
    answered: int
    kamailio_cpu: float  # CPU seconds from the statement until every outcome was recorded
    postgres_cpu: float
    phones_cpu: float  # the answering sipp's


@dataclass(frozen=True)
class Baseline:
    seconds: float
    client_cpu: float  # the sipp client sending the NOTIFYs (autoprov's part)
    phones_cpu: float  # the answering sipp's


# Nothing left to send or to hear from: read from the partial indexes of what is in flight (not
# a count of the fleet's rows, ~10 ms each, which loaded the database the fan-out works on).
SETTLED = """
SELECT NOT EXISTS (SELECT 1 FROM autoprov.resync_notify WHERE state = 'sent')
   AND NOT EXISTS (SELECT 1 FROM autoprov.resync_notify WHERE state = 'queued')
   AND NOT EXISTS (SELECT 1 FROM autoprov.resync_request WHERE state = 'pending' AND NOT checked)
"""


def _wait_all(conn: psycopg.Connection[Any], expected: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        settled = conn.execute(SETTLED).fetchone()
        if settled and settled[0]:
            row = conn.execute("SELECT count(*) FROM autoprov.resync_notify"
                               " WHERE state = ANY(%s)", (list(FINAL),)).fetchone()
            if row and row[0] >= expected:
                return
        # The end is taken from max(answered_at), not from when this noticed it.
        time.sleep(0.25)


def run(quick: bool) -> Section:
    sizes = Sizes.quick() if quick else Sizes()
    section = Section(f"3. Resync fan-out: {sizes.phones} phones, one SQL statement")
    started = time.monotonic()
    with world("resync") as w:
        with w.connect() as conn:
            phones = sipp_load.create_phones(conn, w.base, sizes.phones, "p")
            create_devices(conn, "p")
        baseline = _baseline(phones, w.base / "baseline", sizes)
        # Sized for the fleet: a NOTIFY in flight holds ~45 KB of shared memory and a completed
        # one a few KB for tm's wait timer (5 s); 256 MB sends 50,000 more slowly (kemi/resync.py
        # shrinks its window when sends fail for memory).
        # One UDP worker per core of this 2-core machine: with 4 (the default) the proxy used
        # ~15 % more CPU for the same fan-out, its processes contending for the cores.
        settings = w.settings(sip_shm_mb=SHM_MB, sip_children=WORKERS)
        kamailio = w.kamailio(settings)
        assert kamailio.service.process is not None
        pgid = kamailio.service.process.pid
        _, host, port = settings.sip_listen[0].split(":")
        uas_port = free_port()
        # The proxy answers a challenge in its dialog: one call per phone, as for the baseline.
        answerer = sipp_load.Answerer(phones, uas_port, sizes.phones, w.base / "uas",
                                      timeout=sizes.timeout + 60, scenario="notify-uas-samecall")
        try:
            reg = sipp_load.register_load((host, int(port)), phones, sizes.register_rate,
                                          sizes.phones, w.base / "reg", contact_port=uas_port)
            with w.connect() as conn:
                registered = _count(conn, "SELECT count(*) FROM location")
                if registered < sizes.phones:
                    raise RuntimeError(f"only {registered} of {sizes.phones} phones registered:\n"
                                       f"{reg.output}")
                time.sleep(1.0)  # let the proxy's resync timer settle
                outcome = _resync_all(w, conn, pgid, answerer, sizes)
        finally:
            uas_out = answerer.stop()
        if outcome.answered < sizes.phones:
            section.add("The answering sipp said:", "", "```", uas_out.strip(), "```", "")
    section.seconds = time.monotonic() - started
    _describe(section, sizes, outcome, baseline)
    return section


def _count(conn: psycopg.Connection[Any], sql: str) -> int:
    row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def _resync_all(w: World, conn: psycopg.Connection[Any], pgid: int,
                answerer: sipp_load.Answerer, sizes: Sizes) -> Outcome:
    kamailio_before, postgres_before = cpu_seconds(pgid), postgres_cpu_seconds(w.cluster)
    phones_before = answerer.cpu()
    if PGSS:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")
    # Profiling: BENCH_PERF=FILE records every process's stacks over the fan-out (perf report -i).
    perf = subprocess.Popen(["perf", "record", "-a", "-g", "-F", "499", "-o",
                             os.environ["BENCH_PERF"]], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL) if os.environ.get("BENCH_PERF") else None
    begin = time.time()
    conn.execute(RESYNC_ALL)
    committed = time.time()
    _wait_all(conn, sizes.phones, time.monotonic() + sizes.timeout)
    kamailio_cpu = cpu_seconds(pgid) - kamailio_before
    postgres_cpu = postgres_cpu_seconds(w.cluster) - postgres_before
    phones_cpu = answerer.cpu() - phones_before
    if perf is not None:
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=60)
    if PGSS:
        for calls, total, rows, query in conn.execute(
                "SELECT calls, total_exec_time, rows, left(regexp_replace(query, '\\s+', ' ',"
                " 'g'), 150) FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 25"):
            print(f"pgss {total:9.1f} ms {calls:7d} calls {rows:8d} rows  {query}")
    row = conn.execute(
        "SELECT extract(epoch FROM min(sent_at)), extract(epoch FROM max(answered_at))"
        "  FROM autoprov.resync_notify").fetchone()
    first_sent, last_answer = (float(x) if x is not None else None for x in (row or (None, None)))
    states = {str(s): int(n) for s, n in conn.execute(
        "SELECT state, count(*) FROM autoprov.resync_notify GROUP BY state ORDER BY state")}
    time.sleep(0.5)  # the answerer's trace of its last messages
    wire = answerer.first_request_at()
    answered = sum(n for s, n in states.items() if s in FINAL)
    return Outcome(
        statement_s=committed - begin,
        first_wire_ms=(wire - committed) * 1000 if wire else None,
        first_db_ms=(first_sent - committed) * 1000 if first_sent else None,
        all_done_s=(last_answer - committed) if last_answer and answered >= sizes.phones
        else None,
        states=states, answered=answered, kamailio_cpu=kamailio_cpu,
        postgres_cpu=postgres_cpu, phones_cpu=phones_cpu)


def _baseline(phones: sipp_load.Phones, work: Path, sizes: Sizes) -> Baseline | None:
    """How long a sipp client takes to run the same NOTIFY dialogs straight against the
    answerer, and the CPU either side used."""
    port = free_port()
    answerer = sipp_load.Answerer(phones, port, phones.count, work / "uas", timeout=120,
                                  scenario="notify-uas-samecall")
    try:
        time.sleep(0.3)
        phones_before = answerer.cpu()
        run = sipp_load.notify_load(("127.0.0.1", port), phones, phones.count, work / "uac",
                                    rate=BASELINE_RATE, limit=BASELINE_LIMIT)
        phones_cpu = answerer.cpu() - phones_before
    finally:
        answerer.stop()
    return Baseline(run.elapsed, run.client_cpu, phones_cpu) if run.ok else None


def _ms(value: float | None) -> str:
    return f"{value:.0f} ms" if value is not None else "never"


def _describe(section: Section, sizes: Sizes, o: Outcome, base: Baseline | None) -> None:
    baseline = base.seconds if base is not None else None
    first = o.first_wire_ms if o.first_wire_ms is not None else o.first_db_ms
    section.verdicts.append(Verdict(
        f"resync of {sizes.phones}: first NOTIFY within {FIRST_TARGET_MS:.0f} ms",
        _ms(first), first is not None and first <= FIRST_TARGET_MS))
    section.verdicts.append(Verdict(
        f"resync of {sizes.phones}: every outcome recorded within {ALL_TARGET_S:.0f} s",
        f"{o.all_done_s:.2f} s" if o.all_done_s is not None else "not all within "
        f"{sizes.timeout:.0f} s", o.all_done_s is not None and o.all_done_s <= ALL_TARGET_S))
    section.add(
        f"{sizes.phones} Yealink devices, one line each, every line registered over UDP (one "
        "sipp client; all Contacts point at one sipp in server mode that challenges every "
        "NOTIFY with 401 and checks the retry's digest against that phone's password, looked "
        f"up by the user in the To header). The proxy: {WORKERS} UDP workers (one per core), "
        f"{SHM_MB} MB of shared memory. Then, in one autocommit statement:",
        "", "```sql", RESYNC_ALL + ";", "```", "",
        "Times are measured from the statement's commit (when the requests exist). The first "
        "NOTIFY is timed where the phone receives it (the answering sipp's message trace); "
        "the last outcome is `max(answered_at)` in `autoprov.resync_notify`.", "")
    rows = [
        ["the statement itself (until commit)", f"{o.statement_s * 1000:.0f} ms"],
        ["commit → first NOTIFY received by a phone", _ms(o.first_wire_ms)],
        ["commit → first NOTIFY claimed for sending (`sent_at`)", _ms(o.first_db_ms)],
        ["commit → every outcome recorded",
         f"{o.all_done_s:.2f} s" if o.all_done_s is not None else "not all"],
        ["CPU used meanwhile: Kamailio / PostgreSQL / the phones (answering sipp)",
         f"{o.kamailio_cpu:.2f} s / {o.postgres_cpu:.2f} s / {o.phones_cpu:.2f} s"],
        ["outcomes", ", ".join(f"{s}: {n}" for s, n in o.states.items()) or "none"],
        ["baseline: the same dialogs, sipp client straight to the phones (no proxy)",
         f"{baseline:.2f} s" if baseline is not None else "failed"],
        ["baseline's CPU: the sipp client (autoprov's part) / the phones",
         f"{base.client_cpu:.2f} s / {base.phones_cpu:.2f} s" if base is not None else "-"],
    ]
    ratio = baseline / o.all_done_s if o.all_done_s and baseline else None
    section.verdicts.append(Verdict(
        f"resync of {sizes.phones}: time, sipp straight to the phones / autoprov ≥ {RATIO_TARGET}",
        f"{ratio:.2f} ({baseline:.2f} s against {o.all_done_s:.2f} s)"
        if ratio is not None and baseline is not None and o.all_done_s is not None
        else "not measured", ratio is not None and ratio >= RATIO_TARGET))
    if ratio is not None:
        rows.append(["ratio baseline / autoprov (1.0 = as fast as the phones allow)",
                     f"{ratio:.2f}"])
    section.table(["what", "measured"], rows)
