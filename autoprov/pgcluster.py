"""The private PostgreSQL cluster that development and tests run on.

PostgreSQL refuses to run as root, so when we are root every server command runs as the
``postgres`` system user on a directory that user owns.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

DB_NAME = "autoprov"
DB_USER = "autoprov"
# As root, a checkout's cluster lives here, not in its var/: the postgres user must reach it,
# and a checkout may sit in a folder only root can enter (/root is 0700).
SHARED_ROOT = Path("/var/lib/postgresql/autoprov")


class ClusterError(RuntimeError):
    """The private cluster could not be created or started."""


def _pg_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts[-3])
    if not versions:
        raise ClusterError("PostgreSQL server binaries not found: install the 'postgresql' package")
    return versions[-1].parent


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _server_user_can_write(path: Path) -> bool:
    probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(path)],
                           capture_output=True, check=False)
    return probe.returncode == 0


def checkout_key(var_dir: Path) -> str:
    """A folder name unique to a checkout: its name for humans, a hash of var_dir for the rest."""
    resolved = var_dir.resolve()
    name = re.sub(r"[^a-z0-9]+", "-", resolved.parent.name.lower()).strip("-")[:32] or "checkout"
    return f"{name}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:16]}"


def checkout_base(var_dir: Path) -> Path:
    """Where the private cluster of the checkout whose state is var_dir lives."""
    in_checkout = var_dir / "pg"
    if os.geteuid() != 0:
        return in_checkout  # PostgreSQL runs as this user, who can reach their own checkout
    # A cluster made there before the shared folder existed keeps being used while it can be.
    if (not in_checkout.is_symlink() and (in_checkout / "data" / "PG_VERSION").exists()
            and _server_user_can_write(in_checkout)):
        return in_checkout
    return SHARED_ROOT / checkout_key(var_dir)


def leave_pointer(var_dir: Path, base: Path) -> None:
    """Make var_dir/pg a symlink to a cluster kept elsewhere, so an operator finds it."""
    pointer = var_dir / "pg"
    if pointer == base:
        return
    if pointer.is_symlink():
        if pointer.readlink() == base:
            return
        pointer.unlink()
    elif pointer.is_dir():
        if (pointer / "data" / "PG_VERSION").exists():
            return  # a cluster the postgres user cannot reach: someone's data, left alone
        shutil.rmtree(pointer)  # what a failed first start left: it holds no database
    pointer.symlink_to(base)


class Cluster:
    def __init__(self, base: Path, port: int, *, durable: bool = True) -> None:
        self.base = base
        self.data = base / "data"
        self.port = port
        self.durable = durable
        self.password_file = base / "password"
        self.log_file = base / "postgres.log"

    def url(self) -> str:
        password = self.password_file.read_text().strip()
        return f"postgresql://{DB_USER}:{password}@127.0.0.1:{self.port}/{DB_NAME}"

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            _as_server_user(cmd), capture_output=True, text=True, check=False, cwd="/"
        )
        if result.returncode != 0:
            raise ClusterError(f"{Path(cmd[0]).name} failed: {result.stderr.strip()}")
        return result

    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def init(self) -> None:
        if self.initialized():
            return
        if not self.base.parent.exists():
            self.base.parent.mkdir(parents=True)
            self.base.parent.chmod(0o755)  # the postgres user passes through, whatever the umask
        self.base.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
            if not _server_user_can_write(self.base):
                raise ClusterError(
                    f"the postgres user cannot reach {self.base}: a parent folder is not "
                    "searchable by others (chmod o+x it), or set AUTOPROV_DB_URL"
                )
        self.base.chmod(0o700)
        self.password_file.write_text(secrets.token_hex(16) + "\n")
        self.password_file.chmod(0o600)
        if os.geteuid() == 0:
            shutil.chown(self.password_file, "postgres", "postgres")
        self._run([
            str(_pg_bin() / "initdb"), "-D", str(self.data), "-U", DB_USER,
            "--auth=scram-sha-256", f"--pwfile={self.password_file}",
            "-E", "UTF8", "--locale=C.UTF-8",
        ])
        settings = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            "unix_socket_directories = ''",
            "max_connections = 300",
        ]
        if not self.durable:  # throwaway test clusters: speed over crash safety
            settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with (self.data / "postgresql.auto.conf").open("a") as conf:
            conf.write("\n".join(settings) + "\n")

    def running(self) -> bool:
        if not self.initialized():
            return False
        status = subprocess.run(
            _as_server_user([str(_pg_bin() / "pg_ctl"), "-D", str(self.data), "status"]),
            capture_output=True, check=False, cwd="/",
        )
        return status.returncode == 0

    def start(self) -> None:
        if self.running():
            return
        self._run([
            str(_pg_bin() / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_file),
            "-o", f"-p {self.port}", "-w", "-t", "60", "start",
        ])
        self._create_database()

    def stop(self) -> None:
        if self.running():
            self._run([str(_pg_bin() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                       "stop"])

    def _create_database(self) -> None:
        import psycopg

        admin_url = self.url().rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (DB_NAME,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DB_NAME}"')
