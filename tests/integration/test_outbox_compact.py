"""The compact outbox row (sql/096): codes stored, the same events read and published.

type, topic and source are generated from codes; every reader selects them as
before. An index upgraded from the text columns publishes byte-identical records.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import orjson
import pytest

from mirror.api.events_feed import SELECT_EVENTS, SELECT_EVENTS_OF_SUBJECT
from mirror.events.envelope import OutboxEvent, to_kafka_record, to_structured
from mirror.events.pending import claim_outbox_batch
from mirror.model import Event, EventType
from mirror.store.migrate import SQL_DIR, apply_migrations
from mirror.store.outbox import SOURCE_CODES, TYPE_CODES, append_events
from tests.integration.relay_support import CLAIM_BATCH_BEFORE_100
from tests.postgres_fixture import dsn_with_database, new_database_name, schema_before

pytestmark = pytest.mark.synthetic_events  # hand-made events: the contract check is not the point

OTHER_SOURCE = "/somewhere/else"
ROUTINES_096 = Path(__file__).resolve().parents[1] / "data" / "schema_096" / "routines"


def _events() -> list[Event]:
    out = []
    for n, etype in enumerate(EventType):
        for source in (*SOURCE_CODES, OTHER_SOURCE):
            out.append(Event(etype, f"subject-{n}", {"n": n, "s": source, "x": "é"}, source))
    return out


def test_every_event_type_has_a_code() -> None:
    assert sorted(TYPE_CODES) == sorted(EventType)
    assert len(set(TYPE_CODES)) == len(TYPE_CODES)


async def test_the_columns_read_back_what_was_written(db_pool: asyncpg.Pool) -> None:
    events = _events()
    async with db_pool.acquire() as conn, conn.transaction():
        await append_events(conn, events)
    rows = await db_pool.fetch(
        "SELECT topic, key, type, source, data::text AS data, type_code, source_code, other_source "
        "FROM outbox ORDER BY id"
    )
    assert [(r["topic"], r["key"], r["type"], r["source"]) for r in rows] == [
        (e.topic, e.subject, e.type.value, e.source) for e in events
    ]
    # stored as codes, the text only for a source that is not the mirror's own
    assert {r["other_source"] for r in rows} == {None, OTHER_SOURCE}
    assert all((r["source_code"] is None) == (r["source"] == OTHER_SOURCE) for r in rows)
    filtered = await db_pool.fetchval(
        "SELECT count(*) FROM outbox WHERE type = ANY($1::text[]) AND source = $2",
        ["registry.blob.added", "registry.tag.removed"],
        OTHER_SOURCE,
    )
    assert filtered == 2


async def test_an_unknown_type_is_refused(db_pool: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.NotNullViolationError):
        await db_pool.execute(
            "INSERT INTO outbox (key, type_code, source_code, data) VALUES ('k', NULL, 1, '{}')"
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await db_pool.execute(
            "INSERT INTO outbox (key, type_code, source_code, data) VALUES ('k', 8, 1, '{}')"
        )


def _before_sql100(statement: str) -> str:
    """A reader's statement as it was before sql/100 (every payload stored)."""
    assert "FROM outbox_events" in statement and "payload AS data" in statement
    return statement.replace("FROM outbox_events", "FROM outbox").replace(
        "payload AS data", "data::text AS data"
    )


@pytest.fixture
async def old_outbox(postgres_dsn: str, tmp_path: Path) -> AsyncIterator[asyncpg.Connection]:
    """A database migrated up to the last migration before sql/095 (text columns)."""
    # the routines of then (frozen at 096, which these migrations also ran with)
    old_sql = schema_before(tmp_path / "sql", 95, routines=ROUTINES_096)
    name = new_database_name("outbox_upgrade")
    admin = await asyncpg.connect(postgres_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(dsn_with_database(postgres_dsn, name))
    try:
        await apply_migrations(conn, old_sql)
        assert await conn.fetchval(
            "SELECT attgenerated = '' FROM pg_attribute "
            "WHERE attrelid = 'outbox'::regclass AND attname = 'type'"
        )
        yield conn
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_upgrade_keeps_every_event_byte_for_byte(old_outbox: asyncpg.Connection) -> None:
    events = _events()
    await old_outbox.execute(
        "INSERT INTO outbox (topic, key, type, source, data) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]::json[])",
        [e.topic for e in events],
        [e.subject for e in events],
        [e.type.value for e in events],
        [e.source for e in events],
        [f'{{"n": {n}, "kept": "as written" }}' for n in range(len(events))],
    )
    # the relay sent the first third, in two batches, and (as no relay does) one
    # event past the first unsent one: the upgrade must send that one again, not skip
    # the unsent one (sql/103 keeps how far the relay has sent, not a mark a row)
    third = len(events) // 3
    await old_outbox.execute(
        "UPDATE outbox SET sent_at = now() - interval '1 hour' WHERE id <= $1", third // 2
    )
    await old_outbox.execute(
        "UPDATE outbox SET sent_at = now() WHERE id > $1 AND id <= $2", third // 2, third
    )
    stray = third + 2
    await old_outbox.execute("UPDATE outbox SET sent_at = now() WHERE id = $1", stray)
    # the unsent ones, as the relay read them, and all of them as the feed did (the
    # table itself: outbox_events, sql/100, is not there yet)
    before = [
        OutboxEvent.from_row(r) for r in await old_outbox.fetch(CLAIM_BATCH_BEFORE_100, 1000, 0)
    ]
    feed_before = await old_outbox.fetch(_before_sql100(SELECT_EVENTS), 0, None, None, 1000)
    sent_before = await old_outbox.fetch(
        "SELECT id, sent_at FROM outbox WHERE id <= $1 ORDER BY id", third
    )

    await apply_migrations(old_outbox, SQL_DIR)

    claimed = await claim_outbox_batch(old_outbox, 1000)
    assert [e.id for e in claimed][:3] == [third + 1, stray, third + 3]
    assert len(claimed) == len(events) - third
    after = [e for e in claimed if e.id != stray]
    assert after == before
    feed_after = await old_outbox.fetch(SELECT_EVENTS, 0, None, None, 1000)
    assert len(feed_after) == len(events)
    assert [dict(r) for r in feed_after] == [dict(r) for r in feed_before]
    assert [to_kafka_record(e, "p") for e in after] == [to_kafka_record(e, "p") for e in before]
    assert [orjson.dumps(to_structured(e)) for e in after] == [
        orjson.dumps(to_structured(e)) for e in before
    ]
    # each sent event keeps the time its batch was marked
    sent_after = await old_outbox.fetch(
        "SELECT id, sent_at FROM outbox_events WHERE sent_at IS NOT NULL ORDER BY id"
    )
    assert sent_after == sent_before
    # the writers go on from there, in the new row format
    async with old_outbox.transaction():
        await append_events(old_outbox, events[:2])
    last = await old_outbox.fetch("SELECT type, source FROM outbox ORDER BY id DESC LIMIT 2")
    assert [(r["type"], r["source"]) for r in reversed(last)] == [
        (e.type.value, e.source) for e in events[:2]
    ]
    # sql/095 on the same upgrade: the images indexes a query needs (docs/INDEXES.md),
    # and the GIN index that finds the images holding a blob (sql/090, over the
    # digests' hashes since sql/112)
    indexes = await old_outbox.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'images'")
    assert sorted(r["indexname"] for r in indexes) == [
        "images_blob_hashes",
        "images_folder_id",
        "images_folder_registry",
        "images_pkey",
        "images_registry_created",
        "images_registry_digest",
        "images_registry_id",
        "images_registry_name",
        "images_registry_name_created",
        "images_registry_name_digest",
    ]
    unique = await old_outbox.fetchval(
        "SELECT count(*) FROM pg_indexes WHERE tablename = 'outbox' AND indexdef LIKE '%event_id%'"
    )
    assert unique == 0


async def test_a_subject_is_found_by_the_hash_index(db_pool: asyncpg.Pool) -> None:
    events = _events()
    async with db_pool.acquire() as conn:
        async with conn.transaction():
            await append_events(conn, events)
        await conn.execute("ANALYZE outbox")
        await conn.execute("SET enable_seqscan = off")  # a tiny table: show the index serves it
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                f"EXPLAIN {SELECT_EVENTS_OF_SUBJECT}", 0, None, None, 10, "subject-3"
            )
        )
        rows = await conn.fetch(SELECT_EVENTS_OF_SUBJECT, 0, None, None, 10, "subject-3")
    assert "outbox_key_hash" in plan, plan
    assert [r["key"] for r in rows] == ["subject-3"] * 3
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
