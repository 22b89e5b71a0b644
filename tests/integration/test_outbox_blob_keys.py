"""A blob event's digest key stored as its 32 bytes (sql/107), against real PostgreSQL.

Only a key that reads back byte for byte is stored as bytes ("sha256:" and 64
lowercase hex digits, on a blob event); every reader (relay, feed, subject lookup)
sees the same key and payload either way.
"""

from __future__ import annotations

import asyncpg
import pytest

from mirror.api.events_feed import SELECT_EVENTS_OF_SUBJECT
from mirror.model import Event, EventType
from mirror.store.outbox import append_events
from tests.integration.relay_support import assert_read_as_written, keyed_events

pytestmark = pytest.mark.synthetic_events

CANONICAL = "sha256:" + "0123456789abcdef" * 4
# keys that stay text: not the canonical form, or not a blob event's
TEXT_KEYS = [
    (EventType.BLOB_ADDED, "sha256:" + "0123456789ABCDEF" * 4),  # upper case
    (EventType.BLOB_ADDED, "sha256:" + "ab" * 31),  # short
    (EventType.BLOB_ADDED, "sha256:" + "ab" * 33),  # long
    (EventType.BLOB_ORPHANED, "sha512:" + "cd" * 64),
    (EventType.BLOB_ADDED, CANONICAL + "\n"),
    (EventType.BLOB_ADDED, "sha256:" + "g" * 64),
    (EventType.IMAGE_UPDATED, CANONICAL),
    (EventType.TAG_ADDED, f"reg1/app:{CANONICAL}"),
]


def _events() -> list[Event]:
    events = [
        Event(EventType.BLOB_ADDED, CANONICAL, {"digest": CANONICAL, "size": "7", "image": "crp1"}),
        Event(EventType.BLOB_ORPHANED, CANONICAL, {"digest": CANONICAL, "size": "7"}),
    ]
    for etype, key in TEXT_KEYS:
        events.append(Event(etype, key, {"digest": key, "odd": True}))
    return events


async def test_a_canonical_blob_key_is_stored_as_bytes_and_read_as_text(
    db_pool: asyncpg.Pool,
) -> None:
    events = _events()
    async with db_pool.acquire() as conn, conn.transaction():
        await append_events(conn, events)
    stored = await db_pool.fetch("SELECT key, key_digest FROM outbox ORDER BY id")
    assert [(r["key"], r["key_digest"]) for r in stored[:2]] == [
        (None, bytes.fromhex(CANONICAL[7:]))
    ] * 2
    assert [(r["key"], r["key_digest"]) for r in stored[2:]] == [(k, None) for _, k in TEXT_KEYS]

    # the feed and the relay read every key and payload as written
    await assert_read_as_written(db_pool, events)


async def test_both_forms_of_key_are_found_by_the_hash_index(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        async with conn.transaction():
            # other subjects around them, as in any outbox: a subject is a few rows of many
            await append_events(conn, keyed_events(300, keys=300))
            await append_events(conn, _events())
            await append_events(conn, keyed_events(300, keys=300, start=300))
        await conn.execute("ANALYZE outbox")
        await conn.execute("SET enable_seqscan = off")  # a tiny table: show the index serves it
        for subject, count in [(CANONICAL, 3), (TEXT_KEYS[0][1], 1), (TEXT_KEYS[3][1], 1)]:
            plan = "\n".join(
                r[0]
                for r in await conn.fetch(
                    f"EXPLAIN {SELECT_EVENTS_OF_SUBJECT}", 0, None, None, 10, subject
                )
            )
            assert "outbox_key_hash" in plan, plan
            rows = await conn.fetch(SELECT_EVENTS_OF_SUBJECT, 0, None, None, 10, subject)
            # the canonical digest: both blob events and the image.updated keyed by it
            assert [r["key"] for r in rows] == [subject] * count


async def test_a_stored_digest_key_must_be_a_blob_events_32_bytes(db_pool: asyncpg.Pool) -> None:
    insert = (
        "INSERT INTO outbox (key, key_digest, type_code, source_code, data) "
        "VALUES ($1, $2, $3, 1, '{}')"
    )
    digest = bytes(32)
    for key, key_digest, type_code in [
        (None, digest, 1),  # an image event
        (None, bytes(31), 4),
        (CANONICAL, digest, 4),  # both
        (None, None, 4),  # neither
    ]:
        with pytest.raises(asyncpg.CheckViolationError):
            await db_pool.execute(insert, key, key_digest, type_code)
    await db_pool.execute(insert, None, digest, 5)
    assert await db_pool.fetchval("SELECT key FROM outbox_events") == "sha256:" + "00" * 32
