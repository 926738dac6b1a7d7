"""BENCHMARKS.md: each benchmark's section, the machine, and how to reproduce the numbers."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path


@dataclass
class Verdict:
    target: str
    measured: str
    met: bool | None  # None: not measured (and ignored where judged is False)
    judged: bool = True  # False: a figure shown beside the verdicts, with no target of its own

    @property
    def mark(self) -> str:
        if not self.judged:
            return "reported, not judged"
        return {True: "met", False: "missed", None: "not measured"}[self.met]


@dataclass
class Section:
    title: str
    body: list[str] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, *lines: str) -> None:
        self.body.extend(lines)

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.body.append("| " + " | ".join(header) + " |")
        self.body.append("|" + "|".join(" --- " for _ in header) + "|")
        self.body.extend("| " + " | ".join(row) + " |" for row in rows)
        self.body.append("")


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not installed"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def machine() -> list[str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next((int(x.split()[1]) for x in Path("/proc/meminfo").read_text().splitlines()
                   if x.startswith("MemTotal")), 0)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- CPU: {os.cpu_count()} x {cpu}; memory {mem_kb // 1024 // 1024} GiB; "
        f"{platform.system()} {platform.release()}",
        f"- load average when the run ended: {load}",
        f"- Kamailio: {_version(['kamailio', '-v'])}",
        f"- PostgreSQL: {_version(['postgres', '--version'])}; SIPp: {_version(['sipp', '-v'])}",
        f"- wrk: {_version(['wrk', '-v'])}; ab: {_version(['ab', '-V'])}",
        f"- nginx: {_version(['nginx', '-v'])}; curl: {_version(['curl', '--version'])}",
        f"- Python {platform.python_version()}",
    ]


def _verdict(v: Verdict) -> str:
    mark = f"**{v.mark}**" if v.judged and v.met is False else v.mark
    return f"| {v.target} | {v.measured} | {mark} |"


def write(path: Path, sections: list[Section], argv: list[str], quick: bool,
          note: str) -> None:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`.venv/bin/python -m bench`); do not edit by hand. Every number",
        "is measured against a baseline run in the same invocation, on the same machine, so the",
        "ratios mean more than the absolute rates. Each benchmark starts its own throwaway",
        "PostgreSQL cluster (fsync off, as the test clusters), Kamailio and services on free",
        "ports on 127.0.0.1, and stops them when done.",
        "",
        f"Run: `{' '.join(argv)}`{' (quick mode: smaller sizes, shorter steps)' if quick else ''}",
        f"at {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
    ]
    if note:
        lines += [f"> {note}", ""]
    lines += ["## Machine", "", *machine(), "", "## Summary", "",
              "| target | measured | |", "| --- | --- | --- |"]
    for section in sections:
        lines += [_verdict(v) for v in section.verdicts]
    lines.append("")
    for section in sections:
        lines += [f"## {section.title}", "", *section.body, "",
                  f"_({section.seconds:.0f} s including setup)_", ""]
    findings = Path(__file__).with_name("findings.md")
    if findings.exists():
        lines += [findings.read_text().strip(), ""]
    lines += [
        "## How to reproduce",
        "",
        "```sh",
        "make bench                         # everything, about 15 minutes; writes BENCHMARKS.md",
        ".venv/bin/python -m bench --quick  # smaller sizes, for development",
        ".venv/bin/python -m bench --only register resync --out /tmp/b.md",
        "BENCH_PGSS=1 BENCH_PERF=/tmp/perf.data .venv/bin/python -m bench --only resync"
        " --out /tmp/b.md",
        "                                   # the fan-out profiled: PostgreSQL's statements"
        " printed,",
        "                                   # every process's stacks for `perf report -i"
        " /tmp/perf.data`",
        "```",
        "",
        "`make bench` installs what it needs first (Debian: wrk, nginx, apache2-utils for `ab`,",
        "curl). Timings are reported, never asserted: a busy machine gives lower numbers, so",
        "compare the ratios, and re-run on an idle machine before drawing conclusions.",
        "",
    ]
    path.write_text("\n".join(lines))
