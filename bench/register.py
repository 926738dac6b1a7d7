"""Benchmark 1: REGISTER with digest auth, KEMI Python handler versus the same logic in native
kamailio.cfg (bench/kamailio-native.cfg).

Both proxies run side by side on one database (each with its own phones, so their bindings never
mix), and are stepped up through the same rates in turn, so a busy moment of the machine hits
both alike. A step passes if every registration of it succeeded and it took no longer than it
should at that rate (so the proxy kept up); a failed step is tried once more before it counts.
The whole search runs more than once, the proxies taking turns to go first, and each proxy's
best search counts: a passed step shows the proxy sustained that rate, while a failed one may
be a neighbour's burst on this shared machine (one such step ends a climb).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import sipp_load
from bench.report import Section, Verdict
from bench.sipp_load import LoadRun, Phones
from bench.world import World, cpu_seconds, world

TARGET_RATIO = 0.95
FIRST_RATE = 400.0
STEP_FACTOR = 1.4
MAX_RATE = 12000.0
SLACK_FACTOR, SLACK_SECONDS = 1.25, 2.0
# SIP's T1: a phone that waits longer retransmits over UDP, so the proxy is no longer keeping up.
MAX_P99_MS = 500.0


@dataclass(frozen=True)
class Sizes:
    phones: int = 3000
    step_seconds: float = 4.0
    # x1.4 steps leave a 40 % bracket; 4 geometric bisections narrow it to about 2 %.
    bisections: int = 4
    searches: int = 2
    fixed_rate: float = 500.0

    @classmethod
    def quick(cls) -> Sizes:
        return cls(phones=1000, step_seconds=2.0, bisections=2, searches=1, fixed_rate=300.0)


@dataclass
class Search:
    """One search for a proxy's highest rate: the climb, then the bisections."""
    last_pass: float = 0.0
    first_fail: float | None = None
    runs: list[tuple[LoadRun, bool]] = field(default_factory=list)

    def bracket(self) -> str:
        upper = (f"{self.first_fail:.0f}" if self.first_fail is not None
                 else f"> {MAX_RATE:.0f} (not reached)")
        return f"{self.last_pass:.0f} (first failing step: {upper})"


@dataclass
class Proxy:
    name: str
    native: bool
    address: tuple[str, int]
    pid: int
    phones: Phones
    work: Path
    searches: list[Search] = field(default_factory=list)

    @property
    def best(self) -> Search:
        return max(self.searches, key=lambda search: search.last_pass)

    def attempt(self, rate: float, seconds: float) -> bool:
        """A step of the current (last) search."""
        search = self.searches[-1]
        for _try in (1, 2):
            run = sipp_load.register_load(self.address, self.phones, rate,
                                          max(1, round(rate * seconds)), self.work)
            passed = (run.ok and run.elapsed <= seconds * SLACK_FACTOR + SLACK_SECONDS
                      and run.percentile(99) < MAX_P99_MS)
            search.runs.append((run, passed))
            if passed:
                search.last_pass = max(search.last_pass, rate)
                return True
            time.sleep(1.0)  # let the proxy's queues drain before the retry
        search.first_fail = rate if search.first_fail is None else min(search.first_fail, rate)
        return False


def _start(w: World, name: str, native: bool, phones: Phones, server_id: int) -> Proxy:
    settings = w.settings(sip_server_id=server_id)
    running = w.kamailio(settings, native=native)
    _, host, port = settings.sip_listen[0].split(":")
    assert running.service.process is not None
    return Proxy(name, native, (host, int(port)), running.service.process.pid, phones,
                 w.base / f"sipp-{server_id}")


def _fixed_rate(proxy: Proxy, rate: float, seconds: float) -> tuple[LoadRun, float]:
    """Kamailio CPU seconds per 1,000 registrations at a rate both proxies handle."""
    before = cpu_seconds(proxy.pid)
    run = sipp_load.register_load(proxy.address, proxy.phones, rate, round(rate * seconds),
                                  proxy.work)
    used = cpu_seconds(proxy.pid) - before
    return run, used / max(run.successful, 1) * 1000


def run(quick: bool) -> Section:
    sizes = Sizes.quick() if quick else Sizes()
    section = Section("1. REGISTER: KEMI Python versus native kamailio.cfg")
    started = time.monotonic()
    with world("register") as w:
        with w.connect() as conn:
            kemi_phones = sipp_load.create_phones(conn, w.base, sizes.phones, "k")
            native_phones = sipp_load.create_phones(conn, w.base, sizes.phones, "n")
        proxies = [_start(w, "KEMI (kemi/register.py)", False, kemi_phones, 1),
                   _start(w, "native (bench/kamailio-native.cfg)", True, native_phones, 2)]
        # Every phone registers once first, so the measured REGISTERs are refreshes of existing
        # bindings (an UPDATE of `location`), the steady state of a fleet.
        for proxy in proxies:
            warm = sipp_load.register_load(proxy.address, proxy.phones, 500, sizes.phones,
                                           proxy.work)
            if not warm.ok:
                raise RuntimeError(f"{proxy.name}: warm-up registration failed:\n{warm.output}")
        fixed = {p.name: _fixed_rate(p, sizes.fixed_rate, sizes.step_seconds) for p in proxies}
        for number in range(sizes.searches):
            _search(proxies if number % 2 == 0 else proxies[::-1], sizes)
    section.seconds = time.monotonic() - started
    _describe(section, proxies, fixed, sizes)
    return section


def _search(proxies: list[Proxy], sizes: Sizes) -> None:
    """One search per proxy, stepping them up through the same rates in turn."""
    for proxy in proxies:
        proxy.searches.append(Search())
    climbing = list(proxies)
    rate = FIRST_RATE
    flip = False
    while climbing and rate <= MAX_RATE:
        for proxy in (reversed(climbing) if flip else list(climbing)):
            if not proxy.attempt(rate, sizes.step_seconds):
                climbing.remove(proxy)
        flip = not flip
        rate = round(rate * STEP_FACTOR)
    for _ in range(sizes.bisections):
        for proxy in proxies:
            search = proxy.searches[-1]
            if search.first_fail is None:
                continue
            low = search.last_pass or search.first_fail / 2
            proxy.attempt(round(math.sqrt(low * search.first_fail)), sizes.step_seconds)


def _describe(section: Section, proxies: list[Proxy], fixed: dict[str, tuple[LoadRun, float]],
              sizes: Sizes) -> None:
    kemi, native = proxies
    best_kemi, best_native = kemi.best.last_pass, native.best.last_pass
    ratio = best_kemi / best_native if best_native else float("nan")
    searches = f" (best of {sizes.searches} searches)" if sizes.searches > 1 else ""
    section.verdicts.append(Verdict(
        f"REGISTER max rate, KEMI ≥ {TARGET_RATIO} x native",
        f"{ratio:.2f} ({best_kemi:.0f} / {best_native:.0f} per s{searches})",
        ratio >= TARGET_RATIO))
    section.add(
        f"{sizes.phones} phones per proxy (sipp `-inf` CSV, `[authentication ...]` per line), "
        "UDP, one sipp client per step; each registration is REGISTER → 401 → REGISTER with "
        "digest → 200, auth_db against `subscriber` and usrloc db_mode 1 (write-through to "
        "`location`) in Postgres, 4 UDP workers, log level 2 (neither logs a line per "
        "successful registration). Every phone is registered once before measuring, so the "
        "measured REGISTERs refresh existing bindings.",
        "",
        f"Rates go up by x{STEP_FACTOR} from {FIRST_RATE:.0f}/s, {sizes.step_seconds:.0f} s "
        f"per step, then {sizes.bisections} bisection steps between the last passing and the "
        "first failing rate. A step passes when every registration got its 200, the 99th "
        f"percentile of the time from first REGISTER to 200 stayed under {MAX_P99_MS:.0f} ms "
        "(SIP's T1: a phone waiting longer retransmits, so the proxy is not keeping up) and the "
        f"step took at most {SLACK_FACTOR}x its nominal time + {SLACK_SECONDS:.0f} s. "
        f"The search runs {sizes.searches} time(s), the proxies taking turns to go first; each "
        "proxy's best search counts (a passed step shows the rate was sustained; a failed one may "
        "be another load on this shared machine).",
        "",
    )
    section.table(
        ["proxy", *(f"search {n} (registrations/s)" for n in range(1, sizes.searches + 1)),
         "highest rate with no failure"],
        [[p.name, *(search.bracket() for search in p.searches), f"{p.best.last_pass:.0f}"]
         for p in proxies] +
        [["**ratio KEMI / native**", *([""] * sizes.searches), f"**{ratio:.2f}**"]],
    )
    section.add(f"At a fixed {sizes.fixed_rate:.0f} registrations/s (both keep up): Kamailio's "
                "own CPU (every process of it, from /proc) and response time from the first "
                "REGISTER to the 200.", "")
    rows = []
    for p in proxies:
        run, cpu = fixed[p.name]
        rows.append([p.name, f"{cpu:.2f}", f"{run.percentile(50):.0f}",
                     f"{run.percentile(99):.0f}", "yes" if run.ok else "no"])
    k_cpu, n_cpu = fixed[kemi.name][1], fixed[native.name][1]
    rows.append(["**ratio KEMI / native**", f"**{k_cpu / n_cpu:.2f}**" if n_cpu else "-",
                 "", "", ""])
    section.table(["proxy", "CPU s per 1,000 registrations", "p50 ms", "p99 ms", "all ok"], rows)
    section.add("Every step:", "")
    steps = []
    for p in proxies:
        for number, search in enumerate(p.searches, 1):
            for load, passed in search.runs:
                steps.append([p.name.split(" ")[0], str(number), f"{load.rate:.0f}",
                              str(load.calls),
                              f"{load.successful}/{load.failed}", f"{load.elapsed:.1f}",
                              f"{load.percentile(50):.0f}", f"{load.percentile(99):.0f}",
                              "pass" if passed else "fail"])
    section.table(["proxy", "search", "rate/s", "calls", "ok/failed", "seconds", "p50 ms",
                   "p99 ms", ""], steps)
