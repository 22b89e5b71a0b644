"""Rebuilding the B-tree indexes that a bulk write filled in random key order.

A first mirror inserts images in the upstream's order, and blobs, tags and the
stats rows as they come; most indexes (names, digests, chain keys) receive those
keys in random order. A B-tree page that fills splits in half, so such an index
ends about 70 % full, some 1.4 times its packed size. Built again from its table
(a sorted load, pages 90 % full) the same indexes hold the same entries in less
space: after a 1,000,000-image first mirror the index went from 6.87 to 6.25 KB an
image, for ~40 s of rebuilding (bench/RESULTS.md, "## Ingest").

``rebuild_after_pass`` does it after a pass that created at least half of the
images it listed (a first mirror, or a registry that grew as much), with
``REINDEX INDEX CONCURRENTLY``: the API, the relay and the stats folder go on
reading and writing while each index is built again. The GIN index of layers is
left alone (rebuilt, it is bigger than grown), and so are the tables written in
key order (the outbox, the stats change log). One process rebuilds at a time (an
advisory lock); one that waits over ``LOCK_WAIT_S`` for another transaction
stops. A rebuild that fails or is interrupted leaves an invalid copy of its
index, which every write would still maintain: a failed rebuild drops its own at
once, and the next rebuild drops any left first (any invalid ``*_ccnew`` or
``*_ccold`` index of the mirror's schema, an operator's unfinished REINDEX
CONCURRENTLY too: run such maintenance between passes, not across one).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import asyncpg

log = logging.getLogger(__name__)

# A pass rebuilds when it created at least this many images and at least this
# share of the images it listed.
REBUILD_AFTER_CREATED = 10_000
REBUILD_AFTER_SHARE = 0.5
# REINDEX CONCURRENTLY waits for the transactions that write the index's table or hold
# an older snapshot; the mirror's own are short. A longer wait means a transaction left
# open (a client idle in one): the rebuild stops rather than hold up the next pass.
LOCK_WAIT_S = 60.0
# Indexes smaller than this are not worth a rebuild (128 pages).
MIN_INDEX_BYTES = 1024 * 1024
# Written in key order (the outbox by its id, the change log is emptied by the fold).
APPENDED_IN_ORDER = ("outbox", "stats_changes")
# pg_advisory_lock key: "mirror index rebuild".
REBUILD_LOCK = 0x6D69_7272_6F72_0001

# The B-tree indexes of the mirror's tables, biggest first.
OUT_OF_ORDER_INDEXES = """
SELECT c.relname AS name, pg_relation_size(c.oid) AS bytes
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_am a ON a.oid = c.relam
WHERE t.relnamespace = current_schema()::regnamespace
  AND a.amname = 'btree' AND i.indisvalid AND i.indisready
  AND t.relname <> ALL ($1::text[])
  AND pg_relation_size(c.oid) >= $2
ORDER BY bytes DESC, name
"""
# What an interrupted REINDEX CONCURRENTLY leaves: an invalid index named after
# the one it rebuilt, with _ccnew (the copy) or _ccold (the original, swapped out).
UNFINISHED_COPIES = """
SELECT c.relname AS name
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
WHERE t.relnamespace = current_schema()::regnamespace
  AND NOT i.indisvalid
  AND c.relname ~ '_cc(new|old)[0-9]*$'
ORDER BY name
"""
INDEX_BYTES = "SELECT pg_relation_size(to_regclass(quote_ident($1)))"
TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
SET_LOCK_WAIT = "SELECT set_config('lock_timeout', $1, false)"
RESET_LOCK_WAIT = "RESET lock_timeout"
UNLOCK = "SELECT pg_advisory_unlock($1)"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def rebuild_due(created: int, listed: int) -> bool:
    """Whether a pass that created ``created`` of the ``listed`` images filled the indexes."""
    return created >= REBUILD_AFTER_CREATED and created >= REBUILD_AFTER_SHARE * listed


@dataclass(frozen=True, slots=True)
class Rebuilt:
    """What a rebuild did: the indexes built again, their bytes before and after."""

    indexes: tuple[str, ...] = ()
    bytes_before: int = 0
    bytes_after: int = 0
    seconds: float = 0.0
    failed: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()  # unfinished copies of earlier or failed rebuilds
    skipped: bool = False  # another process held the rebuild lock


async def drop_unfinished_copies(conn: asyncpg.Connection) -> tuple[str, ...]:
    """Drop the invalid copies an interrupted rebuild left; call it holding the rebuild lock."""
    dropped: list[str] = []
    for row in await conn.fetch(UNFINISHED_COPIES):
        name = row["name"]
        try:
            await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_quoted(name)}")
        except asyncpg.PostgresError as exc:
            log.warning(
                "%s, an unfinished copy of an index, stays until the next rebuild: %s", name, exc
            )
            continue
        log.warning("dropped %s, an unfinished copy of an index a rebuild left", name)
        dropped.append(name)
    return tuple(dropped)


async def rebuild_indexes(
    conn: asyncpg.Connection, *, min_bytes: int = MIN_INDEX_BYTES, lock_wait_s: float = LOCK_WAIT_S
) -> Rebuilt:
    """Build each B-tree index of at least ``min_bytes`` again, concurrently with reads and
    writes, biggest first. An index whose rebuild fails stays as it was (its copy dropped);
    a wait of over ``lock_wait_s`` for another transaction stops the rebuild there. A lost
    connection is raised."""
    if not await conn.fetchval(TRY_LOCK, REBUILD_LOCK):
        log.info("another process is rebuilding the indexes: skipped")
        return Rebuilt(skipped=True)
    started = time.monotonic()
    done: list[str] = []
    failed: list[str] = []
    before = after = 0
    try:
        await conn.execute(SET_LOCK_WAIT, f"{max(1, round(lock_wait_s * 1000))}ms")
        dropped = list(await drop_unfinished_copies(conn))
        rows = await conn.fetch(OUT_OF_ORDER_INDEXES, list(APPENDED_IN_ORDER), min_bytes)
        if rows:
            log.info(
                "rebuilding %d indexes (%.0f MB) a bulk write filled out of order; reads and "
                "writes go on",
                len(rows),
                sum(int(r["bytes"]) for r in rows) / 2**20,
            )
        for row in rows:
            name = row["name"]
            try:
                await conn.execute(f"REINDEX INDEX CONCURRENTLY {_quoted(name)}")
            except asyncpg.PostgresError as exc:
                log.warning("rebuilding index %s failed, it stays as it was: %s", name, exc)
                failed.append(name)
                dropped += await drop_unfinished_copies(conn)
                if isinstance(exc, asyncpg.LockNotAvailableError):
                    log.warning("a transaction held the index's table too long: rebuild stopped")
                    break
                continue
            done.append(name)
            before += int(row["bytes"])
            after += int(await conn.fetchval(INDEX_BYTES, name) or 0)
    finally:
        await conn.execute(RESET_LOCK_WAIT)
        await conn.fetchval(UNLOCK, REBUILD_LOCK)
    return Rebuilt(
        tuple(done), before, after, time.monotonic() - started, tuple(failed), tuple(dropped)
    )


async def rebuild_after_pass(pool: asyncpg.Pool, *, created: int, listed: int) -> Rebuilt | None:
    """After a pass: rebuild the indexes when the pass filled them (``rebuild_due``)."""
    if not rebuild_due(created, listed):
        return None
    async with pool.acquire() as conn:
        result = await rebuild_indexes(conn, min_bytes=MIN_INDEX_BYTES)
    if result.indexes:
        log.info(
            "rebuilt %d indexes a pass of %d new images filled out of order: %.0f MB -> %.0f MB "
            "in %.1f s",
            len(result.indexes),
            created,
            result.bytes_before / 2**20,
            result.bytes_after / 2**20,
            result.seconds,
        )
    return result
