"""Opening an index that must already exist, for commands that only read it.

A read command (``mirror stats``) neither creates an embedded cluster in an empty
data dir nor migrates a schema: it says what it found instead
(``IndexUnavailable``), so an empty answer always means an empty index.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from mirror.errors import IndexUnavailable
from mirror.settings import Settings
from mirror.store.database import open_database
from mirror.store.embedded import EmbeddedPostgres
from mirror.store.migrate import count_steps, pending_migrations

SCHEMA_EXISTS = "SELECT to_regclass('schema_migrations') IS NOT NULL"


def where(settings: Settings) -> str:
    """The index's place as a user names it (never the DSN: it may hold a password)."""
    if settings.embedded_database:
        return str(settings.data_dir)
    return "the database given (--database-url / MIRROR_DATABASE_URL)"


async def check_schema(conn: asyncpg.Connection, place: str) -> None:
    """``IndexUnavailable`` unless the schema is there and up to date."""
    if not await conn.fetchval(SCHEMA_EXISTS):
        raise IndexUnavailable(
            f"no index in {place}: its database has no mirror schema", missing=True
        )
    pending = await pending_migrations(conn)
    if pending:
        raise IndexUnavailable(
            f"the index in {place} is behind this version ({count_steps(pending)} "
            f"pending, first {pending[0].name}): run `mirror db upgrade` first",
            missing=False,
        )


@asynccontextmanager
async def open_existing_index(
    settings: Settings, *, max_size: int = 2
) -> AsyncIterator[asyncpg.Pool]:
    """A pool on an index that exists and is up to date; nothing is created or migrated."""
    if settings.embedded_database:
        pgdata = EmbeddedPostgres(settings.data_dir).pgdata
        if not (pgdata / "PG_VERSION").exists():
            raise IndexUnavailable(
                f"no index in {settings.data_dir}: nothing was mirrored there", missing=True
            )
    async with open_database(settings, migrate=False, max_size=max_size) as pool:
        async with pool.acquire() as conn:
            await check_schema(conn, where(settings))
        yield pool
