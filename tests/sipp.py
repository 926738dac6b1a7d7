"""Drive real sipp phones from tests.

A phone line has a contact port, where its UAS side (a sipp in server mode) answers the proxy's
NOTIFYs; its REGISTERs go out from another port, as sipp cannot take a new incoming dialog inside
a client scenario.
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tests.ports import free_port

SCENARIOS = Path(__file__).parent / "scenarios"


@dataclass
class SippResult:
    returncode: int
    output: str
    messages: str  # the -trace_msg log: every SIP message sent and received
    local_port: int

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def received(self, method: str) -> list[str]:
        """The requests of `method` this sipp received, as raw text."""
        out = []
        for chunk in self.messages.split("----------------------------------------------- "):
            if "message received" in chunk:
                body = chunk.split("\n", 2)[-1].lstrip()
                if body.startswith(method + " "):
                    out.append(body)
        return out


def _sipp_command(scenario: str, local_port: int, transport: str, timeout: float,
                  keys: dict[str, str | int], work: str, calls: int = 1,
                  local_ip: str = "127.0.0.1") -> list[str]:
    cmd = [
        "sipp", "-sf", str(SCENARIOS / f"{scenario}.xml"),
        "-m", str(calls), "-i", local_ip, "-p", str(local_port),
        "-t", "u1" if transport == "udp" else "t1",
        "-timeout", f"{int(timeout)}s", "-timeout_error",
        "-nostdin", "-trace_msg", "-message_file", f"{work}/messages.log",
        "-trace_err", "-error_file", f"{work}/errors.log",
        "-trace_logs", "-log_file", f"{work}/log.log",
    ]
    for key, value in keys.items():
        cmd += ["-key", key, str(value)]
    return cmd


def _result(proc_rc: int, out: str, work: str, local_port: int) -> SippResult:
    def read(name: str) -> str:
        path = Path(work, name)
        return path.read_text(errors="replace") if path.exists() else ""

    return SippResult(proc_rc, out[-4000:] + read("errors.log") + read("log.log"),
                      read("messages.log"), local_port)


@dataclass
class Phone:
    """A SIP phone line: one account, one transport, one contact port."""

    user: str
    domain: str
    password: str
    proxy: tuple[str, int]
    transport: str = "udp"
    port: int = field(default_factory=free_port)
    user_agent: str = "Yealink SIP-T46U 108.86.0.90"
    # The address its REGISTERs come from (any of 127.0.0.0/8 works on loopback).
    local_ip: str = "127.0.0.1"

    def keys(self, **extra: str | int) -> dict[str, str | int]:
        values: dict[str, str | int] = {
            "user": self.user, "domain": self.domain, "password": self.password,
            "contact_host": f"[{self.local_ip}]" if ":" in self.local_ip else self.local_ip,
            "contact_port": self.port, "expires": 300,
            "ua": self.user_agent,
            # What the notify-challenge scenarios challenge our NOTIFY with.
            "challenge": f'Digest realm="{self.domain}", nonce="{secrets.token_hex(8)}", '
                         'algorithm=MD5, qop="auth"',
        }
        values.update(extra)
        return values

    def run(self, scenario: str, timeout: float = 15, local_port: int | None = None,
            **keys: str | int) -> SippResult:
        """Run a client scenario once, from `local_port` (a fresh port by default)."""
        port = local_port or free_port()
        with tempfile.TemporaryDirectory(prefix="sipp-") as work:
            cmd = _sipp_command(scenario, port, self.transport, timeout, self.keys(**keys), work,
                                local_ip=self.local_ip)
            cmd += ["-au", self.user, "-ap", self.password, f"{self.proxy[0]}:{self.proxy[1]}"]
            proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True,
                                  timeout=timeout + 10, check=False)
            return _result(proc.returncode, proc.stdout + proc.stderr, work, port)

    def register(self, expires: int = 300, **keys: str | int) -> SippResult:
        return self.run("register", expires=expires, **keys)

    def answer(self, scenario: str, timeout: float = 20, resyncs: int = 1,
               **keys: str | int) -> Answerer:
        """Start this phone's UAS side on its contact port, answering `resyncs` NOTIFYs (a
        challenged NOTIFY and its answer are one call: the answer is in the same dialog)."""
        return Answerer(self, scenario, timeout, self.keys(**keys), resyncs)


class Answerer:
    """A sipp UAS in the background; `result()` waits for it to finish its one call."""

    def __init__(self, phone: Phone, scenario: str, timeout: float,
                 keys: dict[str, str | int], calls: int) -> None:
        self._work = tempfile.TemporaryDirectory(prefix="sipp-uas-")
        self._timeout = timeout
        self._port = phone.port
        cmd = _sipp_command(scenario, phone.port, phone.transport, timeout, keys, self._work.name,
                            calls, local_ip=phone.local_ip)
        self._proc = subprocess.Popen(cmd, cwd=self._work.name, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)

    def result(self) -> SippResult:
        out, _ = self._proc.communicate(timeout=self._timeout + 10)
        return _result(self._proc.returncode, out, self._work.name, self._port)

    def __enter__(self) -> Answerer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._work.cleanup()
