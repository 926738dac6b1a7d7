"""Benchmark 5: the REST API's CSV import (POST /api/v1/devices/import) of 5,000 device lines,
each with a new subscriber, through the web front as a CRM sends it; target: ≤ 10 s."""

from __future__ import annotations

import time
from dataclasses import dataclass

from autoprov import tokens
from bench.report import Section, Verdict
from bench.world import world
from tests.admin_helpers import admin_url, browser_session

TARGET_S = 10.0
HEADER = "mac,vendor,model,line,username,domain,password,display_name\n"


@dataclass(frozen=True)
class Sizes:
    rows: int = 5000
    rounds: int = 3

    @classmethod
    def quick(cls) -> Sizes:
        return cls(rows=5000, rounds=1)


def _csv(round_no: int, rows: int) -> str:
    """Two lines per phone, as a spreadsheet of an office rollout has them."""
    return HEADER + "".join(
        f"0002fd{round_no:02x}{n // 2:04x},cisco,SPA504G,{n % 2 + 1},r{round_no}u{n},"
        f"bench.test,pw-{n},Desk {n // 2}\n" for n in range(rows))


def run(quick: bool) -> Section:
    sizes = Sizes.quick() if quick else Sizes()
    section = Section("5. CSV import through the REST API")
    started = time.monotonic()
    with world("api-import") as w:
        settings = w.settings(admin_password="")
        w.provisioning(settings)
        with w.connect() as conn:
            token = tokens.create(conn, "bench")
        session = browser_session(settings, auth=None)
        url = admin_url(settings, "/api/v1/devices/import")
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/csv"}
        timings = []
        for round_no in range(sizes.rounds):
            body = _csv(round_no, sizes.rows).encode()
            began = time.monotonic()
            reply = session.post(url, data=body, headers=headers, timeout=120)
            timings.append(time.monotonic() - began)
            if reply.status_code != 201:
                raise RuntimeError(f"import answered {reply.status_code}: {reply.text[:500]}")
    best = min(timings)
    section.add(f"{sizes.rows} rows ({sizes.rows // 2} phones with two lines, every line a new "
                "subscriber) per request, one transaction each, over TLS through the web "
                f"front; {sizes.rounds} rounds into a growing database.", "")
    section.table(["round", "seconds", "rows/s"],
                  [[str(i + 1), f"{t:.2f}", f"{sizes.rows / t:.0f}"]
                   for i, t in enumerate(timings)])
    section.verdicts.append(Verdict(f"{sizes.rows} rows in ≤ {TARGET_S:.0f} s",
                                    f"{best:.2f} s ({sizes.rows / best:.0f} rows/s)",
                                    max(timings) <= TARGET_S))
    section.seconds = time.monotonic() - started
    return section
