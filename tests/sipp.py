"""Drive real sipp phones from tests: each call runs one sipp scenario to completion."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.ports import free_port

SCENARIOS = Path(__file__).parent / "scenarios"


@dataclass
class SippResult:
    returncode: int
    output: str
    messages: str  # the -trace_msg log: every SIP message sent and received

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass
class Phone:
    """A SIP phone line: one account, one transport, one local port."""

    user: str
    domain: str
    password: str
    proxy: tuple[str, int]
    transport: str = "udp"
    port: int = field(default_factory=free_port)
    user_agent: str = "Yealink SIP-T46U 108.86.0.90"

    def run(self, scenario: str, timeout: float = 15, **keys: str | int) -> SippResult:
        """Run tests/scenarios/<scenario>.xml once; [key] fields come from `keys` and the line."""
        values: dict[str, str | int] = {
            "user": self.user, "domain": self.domain, "contact_port": self.port,
            "expires": 300, "ua": self.user_agent,
        }
        values.update(keys)
        with tempfile.TemporaryDirectory(prefix="sipp-") as work:
            cmd = [
                "sipp", "-sf", str(SCENARIOS / f"{scenario}.xml"),
                "-m", "1", "-i", "127.0.0.1", "-p", str(self.port),
                "-t", "u1" if self.transport == "udp" else "t1",
                "-timeout", f"{int(timeout)}s", "-timeout_error",
                "-au", self.user, "-ap", self.password,
                "-nostdin", "-trace_msg", "-message_file", f"{work}/messages.log",
                "-trace_err", "-error_file", f"{work}/errors.log",
            ]
            for key, value in values.items():
                cmd += ["-key", key, str(value)]
            cmd.append(f"{self.proxy[0]}:{self.proxy[1]}")
            proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True,
                                  timeout=timeout + 10, check=False)
            messages = Path(work, "messages.log")
            errors = Path(work, "errors.log")
            return SippResult(
                proc.returncode,
                proc.stdout[-4000:] + proc.stderr + (errors.read_text() if errors.exists() else ""),
                messages.read_text() if messages.exists() else "",
            )

    def register(self, expires: int = 300) -> SippResult:
        return self.run("register", expires=expires)
