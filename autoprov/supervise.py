"""Keep one child process running: `python -m autoprov.supervise NAME -- ARGV...`.

Kamailio stops every one of its processes when any one of them dies (a worker killed by the OOM
killer, a crash in a module): `autoprov run` and `up` start it through this, so SIP comes back
within a second or two, with bindings reloaded from `location`. One line per restart on stderr
(the service's log); a child that keeps dying right after its start is restarted ever more
slowly (up to MAX_DELAY_S), not in a tight loop. SIGTERM/SIGINT stop the child and this.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 30.0
STABLE_AFTER_S = 60.0  # a child that ran this long starts the backoff over


def describe(status: int) -> str:
    if status < 0:
        return f"was killed by {signal.Signals(-status).name}"
    return f"exited with status {status}"


def _log(message: str) -> None:
    """One record in Kamailio's own JSON log shape, so autoprov's log pipe writes it as one of
    Kamailio's lines (and not as stray output)."""
    record = {"idx": 0, "pid": os.getpid(), "level": "WARNING", "module": "autoprov",
              "file": "autoprov/supervise.py", "line": 0, "function": "supervise",
              "message": message}
    print(json.dumps(record), file=sys.stderr, flush=True)


def supervise(name: str, argv: list[str]) -> int:
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    delay = FIRST_DELAY_S
    restarts = 0
    while not stopping:
        started = time.monotonic()
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)  # same process group as we
        status = child.wait()
        if stopping:
            break
        ran = time.monotonic() - started
        if ran >= STABLE_AFTER_S:
            delay = FIRST_DELAY_S
        restarts += 1
        _log(f"autoprov supervisor: {name} (pid {child.pid}) {describe(status)} after "
             f"{ran:.0f}s; restart {restarts} in {delay:.1f}s")
        deadline = time.monotonic() + delay
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)
        delay = min(delay * 2, MAX_DELAY_S)
    return 0


def main() -> int:
    args = sys.argv[1:]
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m autoprov.supervise NAME -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    return supervise(args[0], args[2:])


if __name__ == "__main__":
    sys.exit(main())
