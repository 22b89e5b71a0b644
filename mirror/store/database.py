"""Opening the database the Settings describe: embedded or a real server, migrated."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from mirror.dsn import DsnParts
from mirror.errors import ConfigError, DatabaseUnavailable
from mirror.settings import Settings
from mirror.store.embedded import EmbeddedPostgres
from mirror.store.migrate import apply_migrations, count_steps
from mirror.store.pool import create_pool

log = logging.getLogger(__name__)

# Closing a pool whose server died must not hang the exit: past this, it is terminated.
CLOSE_TIMEOUT_S = 10.0
# What connecting to a bad, unreachable or dead server raises (asyncpg's
# ClientConfigurationError is a ValueError; a port past 65535 an OverflowError).
CONNECT_ERRORS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    ValueError,
    OverflowError,
    TimeoutError,
)


def connect_error(dsn: str, exc: BaseException) -> ConfigError | DatabaseUnavailable:
    """One line for a failed connection: what the URL names (never its password) and why.

    A URL asyncpg refuses to use is a configuration error; a server that cannot
    be reached or refuses the login is the database being unavailable.
    """
    parts = DsnParts.parse(dsn)
    reason = parts.scrub(str(exc).strip()) or type(exc).__name__
    where = f"PostgreSQL at {parts.describe()}"
    if isinstance(exc, ValueError | OverflowError):
        return ConfigError(f"MIRROR_DATABASE_URL: cannot use {where}: {reason}")
    return DatabaseUnavailable(f"cannot connect to {where}: {reason}")


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
        except CONNECT_ERRORS as exc:
            # The driver's exception may quote the DSN: it is not chained.
            raise connect_error(dsn, exc) from None
        try:
            if migrate:
                try:
                    async with pool.acquire() as conn:
                        applied = await apply_migrations(conn)
                except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError) as exc:
                    raise connect_error(dsn, exc) from None
                if applied:
                    log.info("applied %s", count_steps(applied))
            yield pool
        finally:
            await close_pool(pool)


async def close_pool(pool: asyncpg.Pool) -> None:
    """Close gracefully; a server that died meanwhile gets its connections dropped instead."""
    try:
        await asyncio.wait_for(pool.close(), timeout=CLOSE_TIMEOUT_S)
    except (OSError, asyncpg.InterfaceError, asyncpg.PostgresError, TimeoutError) as exc:
        log.debug("closing the pool: %r; terminating it", exc)
        pool.terminate()
