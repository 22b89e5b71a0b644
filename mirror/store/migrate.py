"""Forward-only migrations from ``sql/NNN_name.sql``.

Each file runs in its own transaction together with its row in
``schema_migrations``; a session advisory lock keeps concurrent starters
(serve, ingest and run all migrate at start) from racing.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from mirror.errors import MirrorError

log = logging.getLogger(__name__)

# A source checkout keeps migrations in ./sql; an installed image points MIRROR_SQL_DIR at them.
SQL_DIR = Path(os.environ.get("MIRROR_SQL_DIR") or Path(__file__).resolve().parents[2] / "sql")
MIGRATION_LOCK_KEY = 0x6D69_7272_6F72_0001  # "mirror" + 1: any fixed bigint the app owns
_NAME_RE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")

CREATE_VERSIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
SELECT_VERSIONS = "SELECT version FROM schema_migrations"
INSERT_VERSION = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"


class MigrationError(MirrorError):
    """A migration file is malformed or failed to apply."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def find_migrations(sql_dir: Path = SQL_DIR) -> list[Migration]:
    migrations: list[Migration] = []
    for path in sorted(sql_dir.glob("*.sql")):
        match = _NAME_RE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNN_name.sql")
        migrations.append(Migration(int(match.group(1)), path.stem, path))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version in {sql_dir}")
    return migrations


async def pending_migrations(conn: asyncpg.Connection, sql_dir: Path = SQL_DIR) -> list[Migration]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied = {r["version"] for r in await conn.fetch(SELECT_VERSIONS)} if exists else set()
    return [m for m in find_migrations(sql_dir) if m.version not in applied]


async def apply_migrations(conn: asyncpg.Connection, sql_dir: Path = SQL_DIR) -> list[Migration]:
    """Apply every pending migration in order; returns those applied (empty when up to date)."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(CREATE_VERSIONS)
        todo = await pending_migrations(conn, sql_dir)
        for migration in todo:
            log.info("applying migration %s", migration.name)
            try:
                async with conn.transaction():
                    await conn.execute(migration.path.read_text())
                    await conn.execute(INSERT_VERSION, migration.version, migration.name)
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{migration.path.name}: {exc}") from exc
        return todo
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
