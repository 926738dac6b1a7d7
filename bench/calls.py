"""Benchmark 6: calls through the proxy, the KEMI routing (kemi/proxy.py) versus the same routing
written in native kamailio.cfg (bench/kamailio-native-protected.cfg, which also has the same
REGISTER path), side by side on one database, each with its own phones.

Every phone registers first (its Contact pointing at one sipp that plays every callee), so its
verified HA1 is cached, as for a phone in the field; then each phone calls the next one:
INVITE → 407 → INVITE with digest → 180 → 200 → ACK → BYE → 200, all through the proxy
(Record-Route). The rates are stepped up for both proxies in turn (as bench/register.py does),
then a fixed rate measures the Kamailio CPU one call costs each.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bench import register, sipp_load
from bench.register import Proxy, Work
from bench.report import Section, Verdict
from bench.sipp_load import LoadRun, Phones
from bench.world import World, world
from tests.ports import free_port

CPU_TARGET = 1.25  # Kamailio CPU per call, KEMI / native
FIRST_RATE = 100.0
MAX_RATE = 4000.0
FIXED_FRACTION = 0.6


@dataclass(frozen=True)
class Sizes:
    phones: int = 2000
    step_seconds: float = 4.0
    bisections: int = 3
    fixed_rounds: int = 5

    @classmethod
    def quick(cls) -> Sizes:
        return cls(phones=500, step_seconds=2.0, bisections=1, fixed_rounds=1)


@dataclass
class CallProxy(Proxy):
    callers: Phones | None = None

    def drive(self, rate: float, count: int) -> LoadRun:
        assert self.callers is not None
        return sipp_load.call_load(self.address, self.callers, rate, count, self.work)


def _start(w: World, name: str, script: Path | None, phones: Phones, server_id: int,
           callee_port: int) -> CallProxy:
    settings = w.settings(sip_server_id=server_id)
    running = w.kamailio(settings, native=script)
    _, host, port = settings.sip_listen[0].split(":")
    assert running.service.process is not None
    return CallProxy(name, script is not None, (host, int(port)), running.service.process.pid,
                     phones, w.base / f"sipp-{server_id}", w.cluster, callee_port,
                     callers=sipp_load.calls_csv(phones, w.base))


def run(quick: bool) -> Section:
    sizes = Sizes.quick() if quick else Sizes()
    section = Section("6. Calls: KEMI Python versus native kamailio.cfg")
    started = time.monotonic()
    with world("calls") as w:
        with w.connect() as conn:
            kemi_phones = sipp_load.create_phones(conn, w.base, sizes.phones, "k")
            native_phones = sipp_load.create_phones(conn, w.base, sizes.phones, "n")
        callee_ports = free_port(), free_port()
        callees = [sipp_load.callee_server(port, w.base / f"callees-{port}")
                   for port in callee_ports]
        try:
            proxies = [
                _start(w, "KEMI (kemi/proxy.py)", None, kemi_phones, 1, callee_ports[0]),
                _start(w, "native (bench/kamailio-native-protected.cfg)",
                       register.PROTECTED_CFG, native_phones, 2, callee_ports[1])]
            for proxy in proxies:
                warm = sipp_load.register_load(proxy.address, proxy.phones, 500, sizes.phones,
                                               proxy.work, contact_port=proxy.contact_port)
                if not warm.ok:
                    raise RuntimeError(f"{proxy.name}: registration failed:\n{warm.output}")
            register.search(list(proxies), sizes.step_seconds, sizes.bisections, FIRST_RATE,
                            MAX_RATE)
            fixed_rate = round(FIXED_FRACTION * min(p.best.last_pass or FIRST_RATE
                                                    for p in proxies))
            fixed: dict[str, list[Work]] = {p.name: [] for p in proxies}
            for number in range(sizes.fixed_rounds):
                for proxy in proxies if number % 2 == 0 else proxies[::-1]:
                    fixed[proxy.name].append(proxy.load(fixed_rate, sizes.step_seconds))
        finally:
            for callee in callees:
                callee.terminate()
                callee.wait(timeout=10)
    section.seconds = time.monotonic() - started
    _describe(section, proxies, fixed, fixed_rate, sizes)
    return section


def _describe(section: Section, proxies: list[CallProxy], fixed: dict[str, list[Work]],
              rate: float, sizes: Sizes) -> None:
    kemi, native = proxies
    section.add(
        f"{sizes.phones} phones per proxy, all registered first (their Contacts at one sipp "
        "playing every callee; their HA1s cached by the REGISTER, as in the field), each "
        "calling the next one over UDP: INVITE → 407 → ACK → INVITE with digest → 180 → 200 → "
        "ACK → BYE → 200 through the proxy (Record-Route; no media relay), 4 UDP workers. "
        "KEMI: the product's routing (kemi/proxy.py, with its reply route for callees behind "
        "NAT and the resync extension's core reply route). Native: the same stages in "
        "bench/kamailio-native-protected.cfg.", "",
        f"Rates go up by x{register.STEP_FACTOR} from {FIRST_RATE:.0f} calls/s, "
        f"{sizes.step_seconds:.0f} s per step, then {sizes.bisections} bisection steps; a step "
        f"passes when every call completed, the 99th percentile of the setup time (first INVITE "
        f"to 200) stayed under {register.MAX_P99_MS:.0f} ms and the step took at most "
        f"{register.SLACK_FACTOR}x its nominal time + {register.SLACK_SECONDS:.0f} s.", "")
    section.table(
        ["proxy", "search (calls/s)", "highest rate with no failure"],
        [[p.name, p.best.bracket(MAX_RATE), f"{p.best.last_pass:.0f}"] for p in proxies])
    rows = []
    for p in proxies:
        works = fixed[p.name]
        rows.append([p.name, register.each(w.proxy for w in works),
                     register.each(w.postgres for w in works),
                     register.each(w.phones for w in works),
                     register.each((w.run.percentile(99) for w in works), ".0f"),
                     register.each_ok(works)])
    section.add(f"At a fixed {rate:.0f} calls/s ({FIXED_FRACTION} of the lower highest rate), "
                f"{sizes.fixed_rounds} round(s) of {sizes.step_seconds:.0f} s, the proxies in "
                "turns: the CPU one call costs each party (from /proc; sipp: the callers).", "")
    section.table(["proxy", "Kamailio CPU s per 1,000 calls (each round)", "PostgreSQL",
                   "sipp (the callers)", "p99 setup ms", "all ok"], rows)
    kemi_cpu = statistics.median(w.proxy for w in fixed[kemi.name])
    native_cpu = statistics.median(w.proxy for w in fixed[native.name])
    ratio = kemi_cpu / native_cpu if native_cpu else math.nan
    section.verdicts.append(Verdict(
        f"Calls: Kamailio CPU per call, KEMI ≤ {CPU_TARGET} x native",
        f"{ratio:.2f} ({kemi_cpu:.3f} against {native_cpu:.3f} s per 1,000 calls, medians of "
        f"{sizes.fixed_rounds} round(s) at {rate:.0f}/s)", ratio <= CPU_TARGET))
    best_kemi, best_native = kemi.best.last_pass, native.best.last_pass
    section.verdicts.append(Verdict(
        "Calls: highest sustained call rate, KEMI / native",
        f"{best_kemi / best_native if best_native else math.nan:.2f} ({best_kemi:.0f} / "
        f"{best_native:.0f} calls per s)", None, judged=False))
    steps = [[p.name.split(" ")[0], f"{work.run.rate:.0f}", str(work.run.calls),
              f"{work.run.successful}/{work.run.failed}", f"{work.run.elapsed:.1f}",
              f"{work.run.percentile(50):.0f}", f"{work.run.percentile(99):.0f}",
              f"{work.proxy:.3f}", "pass" if passed else "fail"]
             for p in proxies for search in p.searches for work, passed in search.runs]
    section.add("Every step:", "")
    section.table(["proxy", "rate/s", "calls", "ok/failed", "seconds", "p50 ms", "p99 ms",
                   "Kamailio CPU s per 1,000", ""], steps)
