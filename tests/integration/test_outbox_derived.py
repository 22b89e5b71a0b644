"""Derived registry.image.created payloads (sql/100): stored as a tail, published byte for byte.

The payload every reader publishes must be the bytes the writer would have stored
(``orjson.dumps(event.data)``, what ``append_events`` sends): on Kafka, in the feed
and on the SSE stream, whether the row is still derived (its image unchanged) or was
written out because its image changed or went, with the relay behind all along.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mirror.api.app import create_app
from mirror.api.event_stream import STREAM_OPTIONS, StreamOptions
from mirror.events.envelope import OutboxEvent
from mirror.events.pending import claim_outbox_batch
from mirror.events.relay import RelayOptions, run_relay
from mirror.ingest import merge, staging, tags
from mirror.ingest.changes import run_origin
from mirror.ingest.merge import PageWriter, delete_images
from mirror.ingest.staging import page_images
from mirror.model import Event, EventType
from mirror.settings import Settings
from mirror.store.migrate import apply_migrations
from mirror.store.outbox import TYPE_CODES, append_events, key_prefix
from mirror.store.pool import init_connection
from tests.integration.ingest_before_120 import UPSERT_IMAGES_119
from tests.integration.legacy_index import old_schema
from tests.integration.relay_support import CLAIM_BATCH_BEFORE_100, read_topics
from tests.integration.test_ingest_merge import img
from tests.postgres_fixture import dsn_with_database, new_database_name

# The routines as they were at schema 096 (tests/data/README.md).
ROUTINES_096 = Path(__file__).resolve().parents[1] / "data" / "schema_096" / "routines"
FAST = RelayOptions(batch_size=100, poll_interval=0.2, lock_poll_interval=0.2, retry_backoff=0.1)
API = "/registry-mirror/api"
ROWS = "SELECT id, key, type, data::text AS data, data_tail FROM outbox ORDER BY id"


def stored_form(events: Sequence[Event]) -> list[bytes]:
    """What the writer sends for each event: the bytes every reader must publish."""
    return [orjson.dumps(e.data) for e in events]


async def rows(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, list[asyncpg.Record]]:
    """The outbox rows as stored, by key."""
    out: dict[str, list[asyncpg.Record]] = {}
    for r in await conn.fetch(ROWS):
        out.setdefault(r["key"], []).append(r)
    return out


def created_row(by_key: dict[str, list[asyncpg.Record]], key: str) -> asyncpg.Record:
    [row] = [r for r in by_key[key] if r["type"] == EventType.IMAGE_CREATED.value]
    return row


@pytest.fixture
async def api(settings: Settings, db_pool: asyncpg.Pool) -> AsyncIterator[TestClient]:
    app = create_app(settings, pool=db_pool, upstream=None)
    app[STREAM_OPTIONS] = StreamOptions(heartbeat_s=0.3, poll_s=0.2)
    async with TestClient(TestServer(app)) as client:
        yield client


def in_order(body: bytes, fragments: Sequence[bytes]) -> None:
    """Each fragment occurs in ``body``, in this order, verbatim."""
    at = 0
    for n, fragment in enumerate(fragments):
        found = body.find(fragment, at)
        assert found >= 0, (n, fragment[:120])
        at = found + len(fragment)


async def test_create_update_delete_with_the_relay_behind_publishes_the_stored_bytes(
    db_pool: asyncpg.Pool, api: TestClient, settings: Settings, kafka_bootstrap: str
) -> None:
    one, two, three = img(1), img(2, layers=(2, 3)), img(3, layers=(4,))
    events: list[Event] = []
    async with db_pool.acquire() as conn:
        writer = PageWriter(conn, folder_id="f1", origin=run_origin(7))
        await writer.prepare()
        events += (await writer.apply(page_images([one, two, three]))).events

        # derived: no payload stored, only the origin before the last brace
        stored = await rows(conn)
        for image in (one, two, three):
            row = created_row(stored, image["id"])
            assert (row["data"], row["data_tail"]) == (None, ',"runId":"7"')
        # blob and tag events: the payload after what the key says (sql/101)
        others = [r for rs in stored.values() for r in rs if r["type"] != "registry.image.created"]
        assert {r["type"] for r in others} == {"registry.blob.added", "registry.tag.added"}
        assert all(r["data"] is None and r["data_tail"].startswith(',"') for r in others)

        # one changes (a tag): its created payload is written out, from the old doc
        updated = {**one, "tags": ["latest", "v2"]}
        writer = PageWriter(conn, origin=run_origin(8))
        await writer.prepare()
        result = await writer.apply(page_images([updated, two, three]))
        assert result.updated == 1
        events += result.events
        stored = await rows(conn)
        row = created_row(stored, one["id"])
        assert row["data_tail"] is None
        assert row["data"].encode() == orjson.dumps({**one, "runId": "7"})
        assert created_row(stored, two["id"])["data_tail"] is not None

        # one and three are deleted (the API's path: actor and operation in the payload)
        async with conn.transaction():
            origin = {"operationId": "op1", "actor": {"role": "admin", "requestId": "r1"}}
            result = await delete_images(
                conn, [one["id"], three["id"]], "api", source=API, origin=origin
            )
        assert result.deleted == 2
        events += result.events
        stored = await rows(conn)
        assert created_row(stored, three["id"])["data"].encode() == orjson.dumps(
            {**three, "runId": "7"}
        )
        assert created_row(stored, three["id"])["data_tail"] is None
        assert created_row(stored, two["id"])["data_tail"] == ',"runId":"7"'  # unchanged

    ids = await db_pool.fetch(
        "SELECT id, event_id::text AS event_id, sent_at FROM outbox_events ORDER BY id"
    )
    assert len(ids) == len(events)
    assert all(r["sent_at"] is None for r in ids)  # the relay has not read any of it yet
    expected = stored_form(events)
    assert [e.type for e in events].count(EventType.IMAGE_CREATED) == 3

    # the feed: every payload verbatim, in order
    response = await api.get("/mirror/v1/events", params={"limit": "1000"})
    body = await response.read()
    assert response.status == 200
    in_order(body, [b'"data":' + e + b"}" for e in expected])
    feed = orjson.loads(body)["events"]
    assert [orjson.dumps(e["data"]) for e in feed] == expected

    # the stream: one SSE message an event, each ending with the payload verbatim
    response = await api.get("/mirror/v1/events/stream", params={"after": "0"})
    lines: list[bytes] = []
    while len(lines) < len(expected):
        line = await asyncio.wait_for(response.content.readline(), 10)
        assert line, "the stream ended"
        if line.startswith(b"data: "):
            lines.append(line.rstrip(b"\n"))
    response.close()
    assert [line.rsplit(b'"data":', 1)[1] for line in lines] == [e + b"}" for e in expected]

    # Kafka: the record values are the payloads
    prefix = f"t{uuid.uuid4().hex[:12]}"
    kafka = settings.with_(kafka_bootstrap=kafka_bootstrap, kafka_topic_prefix=prefix)
    result = await run_relay(db_pool, kafka, stop=asyncio.Event(), once=True, options=FAST)
    assert result.published == len(events)
    delivered = await read_topics(kafka_bootstrap, prefix, expect_ids={r["event_id"] for r in ids})
    value_of = {d.headers["ce_id"].decode(): d.value for d in delivered}
    assert [value_of[r["event_id"]] for r in ids] == expected


@pytest.mark.synthetic_events  # hand-made payloads, some not images
async def test_a_payload_that_is_not_the_doc_and_a_tail_is_stored_whole(
    db_pool: asyncpg.Pool,
) -> None:
    one, two = img(11), img(12)
    async with db_pool.acquire() as conn:
        writer = PageWriter(conn)
        await writer.prepare()
        await writer.apply(page_images([one, two]))
        await conn.execute("DELETE FROM outbox")
        hand_made = [
            Event(EventType.IMAGE_CREATED, one["id"], one),  # the doc itself: an empty tail
            Event(EventType.IMAGE_CREATED, two["id"], {**two, "tags": ["not", "as", "indexed"]}),
            Event(EventType.IMAGE_CREATED, one["id"], dict(reversed(list(one.items())))),
            Event(EventType.IMAGE_CREATED, "crp-no-such-image", {"id": "crp-no-such-image"}),
            Event(EventType.IMAGE_CREATED, one["id"], {**one, "runId": "9"}),
            # the same bytes under another type: never derived
            Event(EventType.IMAGE_UPDATED, one["id"], {**one, "runId": "9"}),
        ]
        async with conn.transaction():
            await append_events(conn, hand_made)
        stored = await conn.fetch(ROWS)
    expected = stored_form(hand_made)
    assert [r["data_tail"] for r in stored] == ["", None, None, None, ',"runId":"9"', None]
    assert [r["data"] for r in stored] == [
        None, *[e.decode() for e in expected[1:4]], None, expected[5].decode()
    ]  # fmt: skip
    published = await claim_outbox_batch(db_pool, 100)
    assert [e.data.encode() for e in published] == expected


@pytest.mark.synthetic_events  # hand-made payloads, some not the doc
async def test_the_writer_proves_the_payloads_of_the_images_it_inserted(
    db_pool: asyncpg.Pool,
) -> None:
    """``inserted`` (what the ingest passes for the images its transaction inserted): a
    payload that is the doc with a tail is stored as the tail without the images join;
    any other payload, and any event of another type or image, is stored as before."""
    one, two = img(21), img(22)
    docs = {i.id: i.doc for i in page_images([one, two])}
    async with db_pool.acquire() as conn:
        writer = PageWriter(conn)
        await writer.prepare()
        await writer.apply(page_images([one, two]))
        await conn.execute("DELETE FROM outbox")
        hand_made = [
            Event(EventType.IMAGE_CREATED, one["id"], {**one, "runId": "7"}),
            Event(EventType.IMAGE_CREATED, two["id"], two),  # the doc itself: an empty tail
            Event(EventType.IMAGE_CREATED, two["id"], {**two, "tags": ["not", "as", "inserted"]}),
            Event(EventType.IMAGE_CREATED, one["id"], dict(reversed(list(one.items())))),
            Event(EventType.IMAGE_CREATED, one["id"], {"id": one["id"]}),  # shorter than the doc
            Event(EventType.IMAGE_UPDATED, one["id"], {**one, "runId": "7"}),
            Event(EventType.IMAGE_CREATED, "crp-not-inserted", {"id": "crp-not-inserted"}),
        ]
        async with conn.transaction():
            await append_events(conn, hand_made, inserted=docs)
        stored = await conn.fetch(ROWS)
    expected = stored_form(hand_made)
    assert [r["data_tail"] for r in stored] == [',"runId":"7"', "", *[None] * 5]
    assert [r["data"] for r in stored] == [None, None, *[e.decode() for e in expected[2:]]]
    published = await claim_outbox_batch(db_pool, 100)
    assert [e.data.encode() for e in published] == expected


@pytest.mark.synthetic_events  # hand-made payloads
async def test_blob_and_tag_payloads_are_stored_after_their_key(db_pool: asyncpg.Pool) -> None:
    digest = f"sha256:{7:064x}"
    hand_made = [
        Event(EventType.BLOB_ADDED, digest, {"digest": digest, "size": "1", "image": "crp1"}),
        Event(EventType.BLOB_ORPHANED, digest, {"digest": digest, "size": "1", "image": "crp1"}),
        Event(EventType.TAG_ADDED, "r1/app:v1", {"repository": "r1/app", "tag": "v1", "n": "é"}),
        Event(EventType.TAG_REMOVED, "r1/a:b:v1", {"repository": "r1/a:b", "tag": "v1"}),
        # stored whole: the key not what the payload starts with, or not as JSON writes it
        Event(EventType.BLOB_ADDED, digest, {"size": "1", "digest": digest}),
        Event(EventType.BLOB_ADDED, "other", {"digest": digest, "size": "1"}),
        Event(EventType.BLOB_ADDED, 'q"uote', {"digest": 'q"uote', "size": "1"}),
        Event(EventType.TAG_ADDED, "r1/app:v1", {"tag": "v1", "repository": "r1/app"}),
        Event(EventType.TAG_ADDED, "r1/app", {"repository": "r1/app", "tag": "v1"}),
        Event(EventType.TAG_ADDED, "r1/app:v1", {"repository": "r1/app", "tag": "v1"[:1]}),
        Event(EventType.IMAGE_DELETED, digest, {"digest": digest}),  # no prefix for its type
    ]
    async with db_pool.acquire() as conn, conn.transaction():
        await append_events(conn, hand_made)
    stored = await db_pool.fetch(ROWS)
    assert [r["data_tail"] for r in stored[:4]] == [
        ',"size":"1","image":"crp1"}',
        ',"size":"1","image":"crp1"}',
        ',"n":"é"}',
        "}",
    ]
    assert all(r["data"] is None for r in stored[:4])
    assert all(r["data_tail"] is None for r in stored[4:])
    expected = stored_form(hand_made)
    assert [r["data"].encode() for r in stored[4:]] == expected[4:]
    published = await claim_outbox_batch(db_pool, 100)
    assert [e.data.encode() for e in published] == expected


# Keys of every shape a prefix is made of: the separator last, twice, missing, at an
# end; characters JSON escapes; non-ASCII.
PREFIX_KEYS = [
    "r1/app:v1",
    "r1/a:b:v1",
    "r1/app",
    "r1/app:",
    ":v1",
    ":",
    "",
    'q"uote:t\\1',
    "é/ü:ß",
]


async def test_the_writers_prefix_is_the_readers(db_pool: asyncpg.Pool) -> None:
    """``key_prefix`` decides what a writer stores as a tail; readers put back the SQL
    ``outbox_key_prefix`` (sql/101): the two must be one function."""
    cases = [(code, key) for code in range(1, len(TYPE_CODES) + 1) for key in PREFIX_KEYS]
    sql = await db_pool.fetch(
        "SELECT outbox_key_prefix(c, k) AS prefix"
        " FROM unnest($1::smallint[], $2::text[]) WITH ORDINALITY AS u (c, k, n) ORDER BY n",
        [c for c, _ in cases],
        [k for _, k in cases],
    )
    assert [key_prefix(c, k) for c, k in cases] == [r["prefix"] for r in sql]
    assert sum(r["prefix"] is not None for r in sql) == 4 * len(PREFIX_KEYS)


@pytest.mark.parametrize(
    "change",
    [
        'UPDATE images SET doc = \'{"id": "x"}\', doc_template = NULL WHERE id = $1',
        "DELETE FROM images WHERE id = $1",
        "TRUNCATE images",
    ],
)
async def test_any_change_of_the_doc_writes_the_payload_out_first(
    db_pool: asyncpg.Pool, change: str
) -> None:
    one, two = img(21), img(22)
    async with db_pool.acquire() as conn:
        writer = PageWriter(conn, origin=run_origin(3))
        await writer.prepare()
        expected = stored_form((await writer.apply(page_images([one, two]))).events)
        await conn.execute(
            "UPDATE images SET folder_id = 'elsewhere', compressed_size = compressed_size WHERE id = $1",
            two["id"],
        )  # the doc the same: still derived
        assert created_row(await rows(conn), two["id"])["data_tail"] == ',"runId":"3"'
        if "$1" in change:
            await conn.execute(change, one["id"])
        else:
            await conn.execute(change)
        stored = await rows(conn)
        published = await claim_outbox_batch(conn, 100)
    assert created_row(stored, one["id"])["data"].encode() == orjson.dumps({**one, "runId": "3"})
    assert (created_row(stored, two["id"])["data"] is None) == change.startswith(("UPDATE", "DEL"))
    assert [e.data.encode() for e in published] == expected


async def test_the_writer_holds_the_image_until_it_commits(db_pool: asyncpg.Pool) -> None:
    """A doc change waits for the transaction that derived a payload from it, then
    writes that payload out (a change committed in between could not see the row)."""
    one = img(31)
    async with db_pool.acquire() as conn:
        writer = PageWriter(conn)
        await writer.prepare()
        await writer.apply(page_images([one]))
        await conn.execute("DELETE FROM outbox")
    event = Event(EventType.IMAGE_CREATED, one["id"], {**one, "runId": "5"})
    async with db_pool.acquire() as writing, db_pool.acquire() as changing:
        async with writing.transaction():
            await append_events(writing, [event])
            await changing.execute("SET lock_timeout = '100ms'")
            with pytest.raises(asyncpg.LockNotAvailableError):
                await changing.execute(
                    "UPDATE images SET doc = '{}', doc_template = NULL WHERE id = $1", one["id"]
                )
        await changing.execute(
            "UPDATE images SET doc = '{}', doc_template = NULL WHERE id = $1", one["id"]
        )
    [row] = await db_pool.fetch(ROWS)
    assert (row["data"], row["data_tail"]) == (orjson.dumps(event.data).decode(), None)


async def test_a_row_without_its_image_is_never_published_as_null(db_pool: asyncpg.Pool) -> None:
    one = img(41)
    async with db_pool.acquire() as conn:
        writer = PageWriter(conn, origin=run_origin(1))
        await writer.prepare()
        await writer.apply(page_images([one]))
        await conn.execute("ALTER TABLE images DISABLE TRIGGER outbox_write_out_delete")
        await conn.execute("DELETE FROM images WHERE id = $1", one["id"])
        await conn.execute("ALTER TABLE images ENABLE TRIGGER outbox_write_out_delete")
        with pytest.raises(Exception, match="has no payload"):
            await claim_outbox_batch(conn, 100)
        await conn.execute("DELETE FROM outbox")  # not a state the contract check should read


# -- an index upgraded from sql/096 ------------------------------------------------

# The writer as it was before sql/100: every payload stored (mirror/store/outbox.py at fc3b9cb).
INSERT_EVENTS_096 = """
INSERT INTO outbox (key, type_code, source_code, other_source, data)
SELECT e.key, array_position(ARRAY['registry.image.created', 'registry.image.updated',
           'registry.image.deleted', 'registry.blob.added', 'registry.blob.orphaned',
           'registry.tag.added', 'registry.tag.removed']::text[], e.type),
       s.code, CASE WHEN s.code IS NULL THEN e.source END, e.data::json
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS e (key, type, source, data)
CROSS JOIN LATERAL (SELECT array_position(ARRAY['/registry-mirror/ingest',
           '/registry-mirror/api']::text[], e.source) AS code) AS s
"""


def _at_096(sql: str, *replacements: tuple[str, str]) -> str:
    for new, old in replacements:
        assert new in sql, new
        sql = sql.replace(new, old)
    return sql


# The ingest's upsert at schema 096: each image's doc stored whole (no template, sql/104;
# no blob ids, sql/111).
UPSERT_IMAGES_096 = _at_096(
    UPSERT_IMAGES_119,
    ("doc_template, content_hash", "doc, content_hash"),
    ("s.doc_template,", "s.doc_template::json,"),
    ("doc = NULL,\n    doc_template = EXCLUDED.doc_template,", "doc = EXCLUDED.doc,"),
    ("image_doc(old)::json", "old.doc"),
    ("blob_config, blob_ids\n", "blob_config\n"),
    ("s.blob_config, s.blob_ids\n", "s.blob_config\n"),
    (
        "blob_config = EXCLUDED.blob_config,\n    blob_ids = EXCLUDED.blob_ids\n",
        "blob_config = EXCLUDED.blob_config\n",
    ),
)


# The tags statements at schema 096 (repositories by name, digests as text; sql/108 and
# 116 changed both), taking the parameters today's writers pass (a digest as its key
# since sql/120).
TAGS_096 = {
    "SELECT_TAGS": """
SELECT t.repository, t.tag, t.image_id, t.digest, t.released_at IS NOT NULL AS released
FROM tags AS t
JOIN unnest($1::text[], $2::text[]) AS k (repository, tag)
  ON t.repository = k.repository AND t.tag = k.tag
""",
    "UPSERT_TAGS": """
INSERT INTO tags AS t (repository, tag, image_id, digest, released_at)
SELECT r.repository, r.tag, r.image_id, mirror_digest_text(r.digest),
       CASE WHEN r.released THEN now() END
FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bool[])
     AS r (repository, tag, image_id, digest, released)
ORDER BY r.repository, r.tag
ON CONFLICT (repository, tag) DO UPDATE SET
    image_id = EXCLUDED.image_id, digest = EXCLUDED.digest, released_at = EXCLUDED.released_at
""",
    "DELETE_TAGS_OF_IMAGES": """
DELETE FROM tags AS t
USING unnest($1::text[], $2::text[]) AS d (image_id, digest)
WHERE t.image_id = d.image_id
RETURNING t.repository, t.tag, t.image_id, t.digest, t.released_at IS NOT NULL AS released
""",
}


def ingest_at_096(monkeypatch: pytest.MonkeyPatch) -> None:
    """The current ingest writing as it did at schema 096: docs whole, payloads stored."""
    monkeypatch.setattr(merge, "append_events", append_events_096)
    monkeypatch.setattr(merge, "UPSERT_IMAGES", UPSERT_IMAGES_096)
    monkeypatch.setattr(staging, "image_template", lambda doc, *_: (doc, None))
    for name, sql in TAGS_096.items():
        monkeypatch.setattr(tags, name, sql)


async def append_events_096(
    conn: asyncpg.Connection, events: Sequence[Event], *, inserted: object = None
) -> None:
    """The writer at schema 096, which stored every payload whole (``inserted``, the
    docs the current ingest proves its payloads against, is not needed)."""
    if events:
        await conn.execute(
            INSERT_EVENTS_096,
            [e.subject for e in events],
            [e.type.value for e in events],
            [e.source for e in events],
            [orjson.dumps(e.data).decode() for e in events],
        )


@pytest.fixture
async def index_096(postgres_dsn: str, tmp_path: Path) -> AsyncIterator[tuple[str, Any]]:
    name = new_database_name("upgrade100")
    admin = await asyncpg.connect(postgres_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = dsn_with_database(postgres_dsn, name)
    conn = await asyncpg.connect(dsn)
    await init_connection(conn)  # the pool's codecs, as the ingest has them
    try:
        sql = old_schema(tmp_path / "sql", 96, routines=False)
        for routine in ROUTINES_096.glob("*.sql"):
            (sql / "routines" / routine.name).write_bytes(routine.read_bytes())
        await apply_migrations(conn, sql)
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 96
        yield dsn, conn
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_upgrade_keeps_every_stored_payload(
    index_096: tuple[str, asyncpg.Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn, conn = index_096
    one, two = img(51), img(52)
    ingest_at_096(monkeypatch)
    writer = PageWriter(conn, origin=run_origin(4))
    await writer.prepare()
    events = (await writer.apply(page_images([one, two]))).events
    monkeypatch.undo()
    # the relay had sent the first two events (it sends in id order)
    await conn.execute(
        "UPDATE outbox SET sent_at = now() WHERE id <= (SELECT min(id) + 1 FROM outbox)"
    )
    table_before = await conn.fetch("SELECT * FROM outbox ORDER BY id")
    claimed_before = [
        OutboxEvent.from_row(r) for r in await conn.fetch(CLAIM_BATCH_BEFORE_100, 100, 0)
    ]

    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
    env.update(MIRROR_DATABASE_URL=dsn, MIRROR_LOG_LEVEL="WARNING", MIRROR_GRPC_PORT="0")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mirror", "db", "upgrade", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    assert "applied 100_outbox_derived_created\napplied 101_outbox_key_prefix" in out.decode()

    # every row as it was, its payload stored; the readers publish the same
    # (sql/103: the sent marks are kept as how far the relay has sent)
    table_after = await conn.fetch(
        "SELECT o.*, e.sent_at FROM outbox AS o JOIN outbox_events AS e USING (id) ORDER BY id"
    )
    added = ("data_tail", "key_digest")  # columns of later migrations (sql/101, 107)
    assert [{k: v for k, v in dict(r).items() if k not in added} for r in table_after] == [
        dict(r) for r in table_before
    ]
    assert sum(r["sent_at"] is not None for r in table_after) == 2
    assert all(r["data_tail"] is None and r["key_digest"] is None for r in table_after)
    assert await claim_outbox_batch(conn, 100) == claimed_before
    assert [r["data"].encode() for r in await conn.fetch(ROWS)] == stored_form(events)

    # an old stored payload stays stored when its image changes; new events are derived
    writer = PageWriter(conn, origin=run_origin(5))
    await writer.prepare()
    three = img(53)
    await writer.apply(page_images([{**one, "tags": ["v9"]}, two, three]))
    stored = await rows(conn)
    assert created_row(stored, one["id"])["data"].encode() == orjson.dumps({**one, "runId": "4"})
    assert created_row(stored, three["id"])["data_tail"] == ',"runId":"5"'
