"""Database access and migrations.

Kamailio's own tables come from the installed Kamailio's schema files, so their layout always
matches the modules that use them; the project's objects live in the ``autoprov`` schema and
are created by the numbered files in ``sql/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from autoprov import paths
from autoprov.config import Settings
from autoprov.pgcluster import Cluster, checkout_base

SQL_DIR = paths.SQL_DIR
# Kamailio tables we need, with the schema file that creates each and its version-table name.
KAMAILIO_SCHEMA_FILES = (
    ("version", "standard-create.sql"),
    ("subscriber", "auth_db-create.sql"),
    ("location", "usrloc-create.sql"),
)
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Serialises concurrent `db migrate` runs (several nodes starting at once).
_MIGRATE_LOCK = 0x61757470


class MigrationError(RuntimeError):
    """A migration file is malformed or failed to apply."""


def private_cluster(settings: Settings) -> Cluster:
    """This checkout's own cluster, used when db_url is empty (where it lives: checkout_base)."""
    return Cluster(checkout_base(settings.var_dir), settings.db_port)


def url(settings: Settings) -> str:
    """The database URL in use: the configured one, or the private cluster's."""
    if settings.db_url:
        return settings.db_url
    return private_cluster(settings).url()


def kamailio_url(database_url: str) -> str:
    """Kamailio's db_postgres wants postgres://user:pass@host:port/db."""
    return re.sub(r"^postgres(ql)?://", "postgres://", database_url)


def connect(settings: Settings, **kwargs: object) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url(settings), connect_timeout=10, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    path: Path


def migrations(sql_dir: Path = SQL_DIR) -> list[Migration]:
    found = []
    for path in sorted(sql_dir.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration names are NNN_lower_case.sql")
        found.append(Migration(int(match.group(1)), path.stem, path))
    numbers = [m.number for m in found]
    if len(set(numbers)) != len(numbers):
        raise MigrationError("two migrations share a number")
    return found


def _kamailio_tables(conn: psycopg.Connection[tuple[object, ...]], schema_dir: Path) -> list[str]:
    created = []
    has_version = conn.execute("SELECT to_regclass('version') IS NOT NULL").fetchone()
    for table, filename in KAMAILIO_SCHEMA_FILES:
        if table == "version":
            present = bool(has_version and has_version[0])
        else:
            row = conn.execute(
                "SELECT 1 FROM version WHERE table_name = %s", (table,)
            ).fetchone()
            present = row is not None
        if not present:
            path = schema_dir / filename
            if not path.exists():
                raise MigrationError(f"Kamailio schema file {path} not found: install kamailio")
            conn.execute(path.read_text())
            created.append(f"kamailio:{filename}")
    return created


def migrate(settings: Settings, sql_dir: Path = SQL_DIR) -> list[str]:
    """Create Kamailio's tables and apply new project migrations. Returns what was applied."""
    applied: list[str] = []
    with connect(settings, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATE_LOCK,))
        try:
            with conn.transaction():
                applied += _kamailio_tables(conn, settings.kamailio_schema_dir)
                conn.execute("CREATE SCHEMA IF NOT EXISTS autoprov")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS autoprov.schema_version ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
            done = {r[0] for r in conn.execute("SELECT version FROM autoprov.schema_version")}
            for migration in migrations(sql_dir):
                if migration.number in done:
                    continue
                try:
                    with conn.transaction():
                        conn.execute(migration.path.read_text())
                        conn.execute(
                            "INSERT INTO autoprov.schema_version (version, name) VALUES (%s, %s)",
                            (migration.number, migration.name),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(f"{migration.path.name}: {exc}") from exc
                applied.append(migration.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATE_LOCK,))
    return applied
