"""`python -m bench [--quick] [--only NAME ...] [--out FILE]`: run the benchmarks, write the report.

Each benchmark is independent (its own database and services); one that fails is reported as
such and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

from autoprov.config import ROOT
from bench import report

# name: (module, title used when it cannot run)
BENCHMARKS = {
    "register": ("bench.register", "1. REGISTER: KEMI Python versus native kamailio.cfg"),
    "fetch": ("bench.fetch", "2. Config fetch"),
    "resync": ("bench.resync", "3. Resync fan-out"),
    "reboot": ("bench.reboot", "4. Mass reboot"),
    "api-import": ("bench.api_import", "5. CSV import through the REST API"),
    "calls": ("bench.calls", "6. Calls: KEMI Python versus native kamailio.cfg"),
}
NOTE = ("Other engineers' test runs may have been loading this 2-core machine during this run; "
        "the lead re-runs `make bench` on a quiet machine at the end.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for development")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--note", default=NOTE, help="a line for the top of the report")
    args = parser.parse_args(argv)
    sections: list[report.Section] = []
    failed = False
    for name in args.only:
        module_name, title = BENCHMARKS[name]
        print(f"bench: {name} ...", flush=True)
        started = time.monotonic()
        try:
            section: report.Section = importlib.import_module(module_name).run(args.quick)
        except Exception:
            failed = True
            detail = traceback.format_exc()
            print(detail, file=sys.stderr)
            section = report.Section(title, ["The benchmark failed:", "", "```",
                                             detail.strip()[-3000:], "```"])
            section.seconds = time.monotonic() - started
            section.verdicts.append(report.Verdict(title, "benchmark failed", None))
        sections.append(section)
        print(f"bench: {name} done in {time.monotonic() - started:.0f} s", flush=True)
        for verdict in section.verdicts:
            print(f"  {verdict.target}: {verdict.measured} ({verdict.mark})")
    cmd = ["python -m bench", *(argv if argv is not None else sys.argv[1:])]
    report.write(args.out, sections, cmd, args.quick, args.note)
    print(f"bench: wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
