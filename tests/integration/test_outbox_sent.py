"""How far the relay has sent (sql/103, mirror.events.pending), against real PostgreSQL.

The relay records one sent point, not a mark on every row: moving it past a batch
writes no outbox row, one row a minute of sending at most is kept, and retention
deletes by it without ever losing the point itself.
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from mirror.events.pending import (
    claim_outbox_batch,
    delete_expired,
    mark_sent,
    oldest_unsent_age,
)
from tests.integration.relay_support import append, committed_events, keyed_events

pytestmark = pytest.mark.synthetic_events

WEEK = timedelta(days=7)
MARKS = "SELECT up_to, sent_at FROM outbox_sent ORDER BY up_to"
# Each row's version: a rewritten row has another xmin and ctid.
OUTBOX_ROW_VERSIONS = "SELECT id, xmin::text, ctid::text FROM outbox ORDER BY id"


async def ids(pool: asyncpg.Pool) -> list[int]:
    return [r["id"] for r in await committed_events(pool)]


async def test_marking_sent_moves_one_point_and_writes_no_outbox_row(db_pool: asyncpg.Pool) -> None:
    await append(db_pool, keyed_events(30, keys=3))
    every = await ids(db_pool)
    versions = await db_pool.fetch(OUTBOX_ROW_VERSIONS)
    async with db_pool.acquire() as conn:
        assert await oldest_unsent_age(conn) >= 0
        # one transaction: its now() is one time, so both marks fall in one minute
        async with conn.transaction():
            first = await claim_outbox_batch(conn, 10)
            assert [e.id for e in first] == every[:10]
            await mark_sent(conn, first[-1].id)
            # the next claim starts past the point, whatever cursor it is given
            assert [e.id for e in await claim_outbox_batch(conn, 10)] == every[10:20]
            await mark_sent(conn, every[19])
            await mark_sent(conn, every[14])  # behind the point: changes nothing
        marks = await conn.fetch(MARKS)
    # two marks within the same minute: one row, moved to the later batch
    assert [m["up_to"] for m in marks] == [every[19]]
    rows = await committed_events(db_pool)
    assert all(r["sent_at"] == marks[0]["sent_at"] for r in rows[:20])
    assert all(r["sent_at"] is None for r in rows[20:])
    # no outbox row was written again
    assert await db_pool.fetch(OUTBOX_ROW_VERSIONS) == versions


async def test_a_new_minute_of_sending_adds_a_row_and_keeps_the_earlier_times(
    db_pool: asyncpg.Pool,
) -> None:
    await append(db_pool, keyed_events(20, keys=4))
    every = await ids(db_pool)
    await db_pool.execute(
        "INSERT INTO outbox_sent VALUES ($1, now() - interval '2 minutes')", every[4]
    )
    async with db_pool.acquire() as conn:
        await mark_sent(conn, every[9])
    marks = await db_pool.fetch(MARKS)
    assert [m["up_to"] for m in marks] == [every[4], every[9]]
    assert marks[0]["sent_at"] < marks[1]["sent_at"]
    rows = await committed_events(db_pool)
    assert [r["sent_at"] for r in rows[:10]] == [marks[0]["sent_at"]] * 5 + [
        marks[1]["sent_at"]
    ] * 5


async def sent_thirty(pool: asyncpg.Pool, *days_ago: int) -> list[int]:
    """30 events; the first 10, then the next 10, recorded sent ``days_ago`` days ago."""
    await append(pool, keyed_events(30, keys=3))
    every = await ids(pool)
    await pool.executemany(
        "INSERT INTO outbox_sent VALUES ($1, now() - $2::interval)",
        [(every[10 * n + 9], timedelta(days=d)) for n, d in enumerate(days_ago)],
    )
    return every


async def test_retention_deletes_what_older_points_cover_and_keeps_the_newest_point(
    db_pool: asyncpg.Pool,
) -> None:
    # sent 9 and 8 days ago, the relay idle since: every sent event has expired
    every = await sent_thirty(db_pool, 9, 8)
    async with db_pool.acquire() as conn:
        assert await delete_expired(conn, WEEK) == 20
        # the point stays where it was: the unsent events are neither lost nor resent
        assert [m["up_to"] for m in await conn.fetch(MARKS)] == [every[19]]
        assert [e.id for e in await claim_outbox_batch(conn, 100)] == every[20:]
        assert await delete_expired(conn, WEEK) == 0
    assert await ids(db_pool) == every[20:]


async def test_retention_spares_events_sent_within_it(db_pool: asyncpg.Pool) -> None:
    every = await sent_thirty(db_pool, 8, 6)
    async with db_pool.acquire() as conn:
        assert await delete_expired(conn, WEEK) == 10
    assert await ids(db_pool) == every[10:]
    assert [m["up_to"] for m in await db_pool.fetch(MARKS)] == [every[19]]
