"""The stats folder: turns the change log into the dedup aggregates, outside the writers' transactions.

Writers (the ingest, deletions) only append what changed to ``stats_changes``
(sql/routines/stats.sql, ``stats_log_*``). A fold pass is one transaction:
under REPEATABLE READ, ``stats_fold()`` takes every change the snapshot sees,
applies it to the aggregates set-based, deletes it from the log and records in
``stats_folded`` up to where the figures are exact (the newest outbox event and
the time of the snapshot). A crash or an error anywhere in the pass rolls all of
it back; the changes stay in the log and the next pass folds them again, exactly.

One folder at a time: a pass holds a session advisory lock (``FOLDER_LOCK_KEY``)
from before its transaction starts until after it ends, so the next pass's
snapshot always sees the previous pass's deletions. Another process that finds
the lock taken skips its pass (``run_folder``) or waits for it (``fold_to_end``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

log = logging.getLogger(__name__)

FOLDER_LOCK_KEY = 0x6D69_7272_6F72_0005  # "mirror" + 5 (sql/routines/stats.sql takes it too)
DEFAULT_FOLD_INTERVAL_S = 1.0

TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
LOCK = "SELECT pg_advisory_lock($1)"
UNLOCK = "SELECT pg_advisory_unlock($1)"
FOLD = "SELECT stats_fold()"

# Called inside the pass's transaction after the aggregates are written, before
# the commit (tests use it to crash a pass at its worst moment).
BeforeCommit = Callable[[asyncpg.Connection], Awaitable[None]]


async def fold_once(
    conn: asyncpg.Connection, *, wait: bool = False, before_commit: BeforeCommit | None = None
) -> int | None:
    """One fold pass on ``conn``: how many log rows it folded, or ``None`` when another
    folder holds the lock and ``wait`` is false."""
    if wait:
        await conn.execute(LOCK, FOLDER_LOCK_KEY)
    elif not await conn.fetchval(TRY_LOCK, FOLDER_LOCK_KEY):
        return None
    try:
        async with conn.transaction(isolation="repeatable_read"):
            folded: int = await conn.fetchval(FOLD)
            if before_commit is not None:
                await before_commit(conn)
        return folded
    finally:
        if not conn.is_closed():
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError):
                await conn.execute(UNLOCK, FOLDER_LOCK_KEY)


async def fold_to_end(pool: asyncpg.Pool) -> int:
    """Fold every change committed before this call (waiting for a running pass
    elsewhere); returns how many log rows this call folded."""
    async with pool.acquire() as conn:
        return await fold_once(conn, wait=True) or 0


async def run_folder(
    pool: asyncpg.Pool, stop: asyncio.Event, *, interval: float = DEFAULT_FOLD_INTERVAL_S
) -> None:
    """Fold a pass every ``interval`` seconds until ``stop`` is set. A pass that
    fails (the database went away, a conflict) is logged and tried again later."""
    while not stop.is_set():
        try:
            async with pool.acquire() as conn:
                folded = await fold_once(conn)
            if folded:
                log.debug("stats folder: %d change(s) folded", folded)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("stats folder: pass failed, retrying in %.0fs: %s", interval, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
