"""A tag event's digest stored as its 32 bytes (sql/117), against real PostgreSQL.

Only a tail that reads back byte for byte loses its 64 hex digits (a sha256 digest in
lower-case hex, after the tail's first '"digest":"sha256:'); every reader (relay,
feed, subject lookup) sees the same key and payload either way.
"""

from __future__ import annotations

import asyncpg
import orjson
import pytest

from mirror.api.events_feed import SELECT_EVENTS_OF_SUBJECT
from mirror.model import Event, EventType
from mirror.store.outbox import append_events
from tests.integration.relay_support import assert_read_as_written

pytestmark = pytest.mark.synthetic_events

DIGEST = "sha256:" + "0123456789abcdef" * 4
HEX = DIGEST[7:]


def tag_event(etype: EventType, tag: str, **data: object) -> Event:
    payload = {"repository": "reg1/app", "tag": tag, **data}
    return Event(etype, f"reg1/app:{tag}", payload)


# stored with the digest's bytes: the tail loses its 64 hex digits
COMPACT = [
    tag_event(EventType.TAG_ADDED, "v1", imageId="crp1", digest=DIGEST, runId="3"),
    tag_event(EventType.TAG_ADDED, "v2", imageId="crp2", digest=DIGEST, previousImageId="crp1"),
    tag_event(EventType.TAG_REMOVED, "v3", imageId="crp1", digest=DIGEST, reason="untagged"),
    # the digest's text again in a later field
    tag_event(EventType.TAG_ADDED, "v4", imageId="crp1", digest=DIGEST, note=DIGEST),
    # a string that spells the marker out is escaped in JSON: not taken for it
    tag_event(EventType.TAG_ADDED, "v5", imageId='"digest":"sha256:', digest=DIGEST),
]
# stored with their whole tails
WHOLE = [
    tag_event(EventType.TAG_ADDED, "w1", imageId="crp1", digest=DIGEST.upper()),
    tag_event(EventType.TAG_ADDED, "w2", imageId="crp1", digest="sha512:" + "ab" * 64),
    tag_event(EventType.TAG_ADDED, "w3", imageId="crp1", digest=""),
    tag_event(EventType.TAG_ADDED, "w4", imageId="crp1"),  # no digest
    # another digest field before it: the reader would put the digits back there, so
    # the statement keeps the tail
    tag_event(EventType.TAG_ADDED, "w5", origin={"digest": "sha256:" + "f" * 64}, digest=DIGEST),
    # a key JSON escapes: no prefix, the payload stored whole
    Event(EventType.TAG_ADDED, 'reg1/app:"q"', {"repository": "reg1/app", "digest": DIGEST}),
]


async def test_a_tag_events_digest_is_stored_as_bytes_and_read_back(
    db_pool: asyncpg.Pool,
) -> None:
    events = COMPACT + WHOLE
    async with db_pool.acquire() as conn, conn.transaction():
        await append_events(conn, events)
    stored = await db_pool.fetch("SELECT key, key_digest, data_tail FROM outbox ORDER BY id")
    assert [r["key"] for r in stored] == [e.subject for e in events]
    for row, event in zip(stored, COMPACT, strict=False):
        assert row["key_digest"] == bytes.fromhex(HEX)
        # the digest field's 64 digits gone from the tail, nothing else
        assert '"digest":"sha256:"' in row["data_tail"]
        assert row["data_tail"].count(HEX) == orjson.dumps(event.data).decode().count(HEX) - 1
    assert [r["key_digest"] for r in stored[len(COMPACT) :]] == [None] * len(WHOLE)
    assert HEX in stored[len(COMPACT) + 4]["data_tail"]

    # the feed and the relay read every payload as written, byte for byte
    await assert_read_as_written(db_pool, events)
    # a subject's events are found by its key, as before
    rows = await db_pool.fetch(SELECT_EVENTS_OF_SUBJECT, 0, None, None, 100, "reg1/app:v2")
    assert [orjson.loads(r["data"]) for r in rows] == [COMPACT[1].data]


async def test_a_tag_row_with_a_digest_needs_its_tail(db_pool: asyncpg.Pool) -> None:
    """The constraint: a text key with bytes is a tag event's, its tail stored."""
    insert = (
        "INSERT INTO outbox (key, key_digest, type_code, source_code, data, data_tail)"
        " VALUES ($1, $2, $3, 1, $4, $5)"
    )
    digest = bytes.fromhex(HEX)
    async with db_pool.acquire() as conn:
        for values in [
            ("reg1/app:v1", digest, 6, '{"a":1}', None),  # no tail
            ("crp1", digest, 1, None, ',"runId":"1"'),  # not a tag event
            ("reg1/app:v1", digest[:31], 6, None, ',"x":1}'),  # not 32 bytes
        ]:
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(insert, *values)
