"""Opening the database the Settings describe: embedded or a real server, migrated."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from mirror.errors import ConfigError
from mirror.settings import Settings
from mirror.store.embedded import EmbeddedPostgres
from mirror.store.migrate import apply_migrations
from mirror.store.pool import create_pool

log = logging.getLogger(__name__)


@asynccontextmanager
async def database_dsn(settings: Settings) -> AsyncIterator[str]:
    """The DSN to use: MIRROR_DATABASE_URL, or an embedded server started for the duration."""
    if settings.database_url is not None:
        yield settings.database_url.reveal()
        return
    embedded = EmbeddedPostgres(settings.data_dir)
    dsn = await embedded.astart()
    try:
        yield dsn
    finally:
        await embedded.astop()


@asynccontextmanager
async def open_database(
    settings: Settings, *, migrate: bool = True, max_size: int = 10, **pool_options: Any
) -> AsyncIterator[asyncpg.Pool]:
    """A migrated pool; the embedded server (if any) and the pool close together on exit.

    ``pool_options`` go to ``asyncpg.create_pool`` (e.g. ``reset``).
    """
    async with database_dsn(settings) as dsn:
        try:
            pool = await create_pool(dsn, max_size=max_size, **pool_options)
        except (OSError, asyncpg.PostgresError) as exc:
            # asyncpg errors can quote the DSN: name the setting, not its value.
            raise ConfigError(
                f"MIRROR_DATABASE_URL: cannot connect to PostgreSQL ({type(exc).__name__})"
            ) from None
        try:
            if migrate:
                async with pool.acquire() as conn:
                    applied = await apply_migrations(conn)
                if applied:
                    log.info("applied %d migration(s)", len(applied))
            yield pool
        finally:
            await pool.close()
