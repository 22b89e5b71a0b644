"""Forward-only migrations from ``sql/NNN_name.sql``, then the routines of ``sql/routines/``.

Each migration file runs in its own transaction together with its row in
``schema_migrations``; a session advisory lock keeps concurrent starters
(serve, ingest and run all migrate at start) from racing.

A routine file (``sql/routines/name.sql``) holds the current definition of
functions that would otherwise be copied whole into a new migration to change
a few lines (the stats triggers): ``CREATE OR REPLACE`` statements, applied
after the migrations, under the same lock, whenever the file's SHA-256 differs
from the one recorded in ``schema_routines``, and after any migration: a migration
may write a table anew, dropping what a routine made on it (a trigger), so each
migration forgets the recorded checksums in its own transaction and the routines
are applied again, even by the next start when their step failed. Changing such a
function is an edit of its file. A migration must not depend on a routine's newest body (on a
fresh database every migration runs before any routine); a one-time step a
migration needs from a routine is a guarded statement at the end of the routine
file (``sql/routines/stats.sql`` recomputes the stats once after sql/080).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from mirror.errors import MigrationError

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
CREATE_ROUTINES = """
CREATE TABLE IF NOT EXISTS schema_routines (
    name       text PRIMARY KEY,
    checksum   bytea NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
SELECT_ROUTINES = "SELECT name, checksum FROM schema_routines"
RECORD_ROUTINE = """
INSERT INTO schema_routines (name, checksum) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()
"""
FORGET_ROUTINES = "DELETE FROM schema_routines"
_ROUTINE_RE = re.compile(r"^[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


@dataclass(frozen=True)
class Routine:
    name: str
    path: Path
    checksum: bytes


Step = Migration | Routine


def find_routines(sql_dir: Path = SQL_DIR) -> list[Routine]:
    routines: list[Routine] = []
    for path in sorted((sql_dir / "routines").glob("*.sql")):
        if not _ROUTINE_RE.match(path.name):
            raise MigrationError(f"routines/{path.name}: routine files are named name.sql")
        checksum = hashlib.sha256(path.read_bytes()).digest()
        routines.append(Routine(path.stem, path, checksum))
    return routines


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


async def pending_migrations(conn: asyncpg.Connection, sql_dir: Path = SQL_DIR) -> list[Step]:
    """The migrations not applied yet, then the routine files: every one after a
    migration, else those changed since last applied."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied = {r["version"] for r in await conn.fetch(SELECT_VERSIONS)} if exists else set()
    migrations = [m for m in find_migrations(sql_dir) if m.version not in applied]
    exists = await conn.fetchval("SELECT to_regclass('schema_routines') IS NOT NULL")
    current = (
        {r["name"]: bytes(r["checksum"]) for r in await conn.fetch(SELECT_ROUTINES)}
        if exists
        else {}
    )
    routines = [
        r for r in find_routines(sql_dir) if migrations or current.get(r.name) != r.checksum
    ]
    return [*migrations, *routines]


def count_steps(steps: Sequence[Step]) -> str:
    """What ``steps`` are, for a message: "3 migration(s)", the routine files not counted
    when a migration comes with them (they follow every migration), else "1 routine file(s)"."""
    migrations = sum(isinstance(s, Migration) for s in steps)
    return f"{migrations} migration(s)" if migrations else f"{len(steps)} routine file(s)"


async def apply_migrations(conn: asyncpg.Connection, sql_dir: Path = SQL_DIR) -> list[Step]:
    """Apply every pending migration in order, then the routine files (all after a
    migration, else the changed ones);
    returns what was applied (empty when up to date)."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(CREATE_VERSIONS)
        await conn.execute(CREATE_ROUTINES)
        todo = await pending_migrations(conn, sql_dir)
        for step in todo:
            log.info("applying %s %s", type(step).__name__.lower(), step.name)
            try:
                async with conn.transaction():
                    await conn.execute(step.path.read_text())
                    if isinstance(step, Migration):
                        await conn.execute(INSERT_VERSION, step.version, step.name)
                        await conn.execute(FORGET_ROUTINES)
                    else:
                        await conn.execute(RECORD_ROUTINE, step.name, step.checksum)
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{step.path.name}: {exc}") from exc
        return todo
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
