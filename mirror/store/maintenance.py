"""What the mirror does to its database after an ingest pass, in ``mirror run`` and ``mirror ingest``.

After a pass that filled the indexes (a first mirror): their B-tree indexes are
built again, packed (``mirror.store.index_rebuild``), on any server. After a pass
that changed many images, on the embedded PostgreSQL only: a vacuum and a
checkpoint, so its WAL is removed now (``mirror.store.embedded``); another
server's WAL is its administrator's business. The rebuild goes first, so that its
own WAL is removed with the rest. A failure is logged, never raised: the pass's
data is committed, and the next pass goes on.
"""

from __future__ import annotations

import logging

import asyncpg

from mirror.store.embedded import RELEASE_WAL_AFTER_CHANGES, release_wal
from mirror.store.index_rebuild import rebuild_after_pass

log = logging.getLogger(__name__)


async def after_pass(
    pool: asyncpg.Pool, *, created: int, listed: int, changed: int, embedded: bool
) -> None:
    """Rebuild the indexes a pass filled, then release the embedded server's WAL."""
    try:
        await rebuild_after_pass(pool, created=created, listed=listed)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("rebuilding the indexes after the ingest pass failed: %r", exc)
    if not embedded or changed < RELEASE_WAL_AFTER_CHANGES:
        return
    try:
        async with pool.acquire() as conn:
            await release_wal(conn)
        log.info("vacuum and checkpoint after %d changed image(s): WAL released", changed)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("vacuum and checkpoint after the ingest pass failed: %r", exc)
