"""An event's id derived from its outbox position (sql/105), against real PostgreSQL.

The row stores no id; every reader (relay, feed) gets the same version 8 UUID from
the view on every read, distinct per event and per database; a row that stores an
id (written before sql/105) keeps it.
"""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from mirror.api.events_feed import SELECT_EVENTS
from mirror.events.pending import claim_outbox_batch
from mirror.store.migrate import SQL_DIR
from tests.integration.relay_support import append, committed_events, keyed_events
from tests.postgres_fixture import scratch_database

pytestmark = pytest.mark.synthetic_events


def _position(event_id: uuid.UUID) -> int:
    """The last 62 bits: the outbox position the id was derived from."""
    return event_id.int & ((1 << 62) - 1)


async def test_new_events_store_no_id_and_read_one_from_their_position(
    db_pool: asyncpg.Pool,
) -> None:
    await append(db_pool, keyed_events(40, keys=7))
    assert await db_pool.fetchval("SELECT count(*) FROM outbox WHERE event_id IS NOT NULL") == 0

    rows = await committed_events(db_pool)
    ids = [uuid.UUID(r["event_id"]) for r in rows]
    assert len(set(ids)) == len(rows) == 40
    assert all(i.version == 8 and i.variant == uuid.RFC_4122 for i in ids)
    assert [_position(i) for i in ids] == [r["id"] for r in rows]
    # one database: the same first 64 bits on every event
    assert len({i.int >> 64 for i in ids}) == 1

    # the relay and the feed carry the same id, read after read
    async with db_pool.acquire() as conn:
        claimed = await claim_outbox_batch(conn, 100)
    assert [e.event_id for e in claimed] == [str(i) for i in ids]
    feed = await db_pool.fetch(SELECT_EVENTS, 0, None, None, 100)
    assert [r["event_id"] for r in feed] == ids
    assert [r["event_id"] for r in await committed_events(db_pool)] == [str(i) for i in ids]


async def test_a_stored_id_is_read_as_stored(db_pool: asyncpg.Pool) -> None:
    stored = uuid.uuid4()
    await db_pool.execute(
        "INSERT INTO outbox (event_id, key, type_code, source_code, data) "
        "VALUES ($1, 'k', 2, 1, '{}')",
        stored,
    )
    await append(db_pool, keyed_events(1, keys=1))
    first, second = await committed_events(db_pool)
    assert first["event_id"] == str(stored)
    assert uuid.UUID(second["event_id"]).version == 8


async def test_each_database_draws_its_own_ids(postgres_dsn: str) -> None:
    derived = []
    for _ in range(2):
        async with scratch_database(postgres_dsn, "event_id", sql_dir=SQL_DIR) as conn:
            derived.append(await conn.fetchval("SELECT outbox_event_id(1)"))
    first, second = derived
    assert first != second
    assert _position(first) == _position(second) == 1
    assert first.version == second.version == 8
