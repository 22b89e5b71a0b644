"""The outbox relay against real PostgreSQL and a real Kafka broker (in-process)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaTimeoutError

from mirror.events.pending import RELAY_LOCK_KEY
from mirror.events.relay import Relay, RelayOptions, run_relay
from mirror.model import EventType
from mirror.settings import Settings
from mirror.store.outbox import append_events
from tests.integration.relay_support import (
    RFC3339,
    append,
    assert_exactly_once_in_commit_order,
    committed_events,
    image_event,
    keyed_events,
    read_topics,
    sent_count,
    unsent_count,
    wait_all_sent,
    wait_until,
)

# The relay is exercised with hand-made events (not checked against the event schemas).
pytestmark = pytest.mark.synthetic_events

FAST = RelayOptions(batch_size=100, poll_interval=0.2, lock_poll_interval=0.2, retry_backoff=0.1)


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def relay_settings(settings: Settings, kafka_bootstrap: str, topic_prefix: str) -> Settings:
    return settings.with_(kafka_bootstrap=kafka_bootstrap, kafka_topic_prefix=topic_prefix)


@contextlib.asynccontextmanager
async def running(relay: Relay) -> AsyncIterator[asyncio.Task[Any]]:
    """The relay in a background task, stopped (and its errors raised) on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_invariant_2_every_committed_change_is_published_and_marked_sent(
    db_pool: asyncpg.Pool, relay_settings: Settings, kafka_bootstrap: str, topic_prefix: str
) -> None:
    await append(db_pool, keyed_events(250, keys=20))
    # A change that rolls back takes its event with it: nothing invented.
    with contextlib.suppress(RuntimeError):
        async with db_pool.acquire() as conn, conn.transaction():
            await append_events(conn, [image_event("crprolledback0000000", 0)])
            raise RuntimeError("the change failed")

    result = await run_relay(db_pool, relay_settings, stop=asyncio.Event(), once=True, options=FAST)

    committed = await committed_events(db_pool)
    assert result.was_active and result.published == len(committed) == 250
    assert all(r["sent_at"] is not None for r in committed)
    delivered = await read_topics(
        kafka_bootstrap, topic_prefix, expect_ids={r["event_id"] for r in committed}
    )
    counts = assert_exactly_once_in_commit_order(delivered, committed)
    assert counts["duplicates"] == 0
    assert all(d.key != "crprolledback0000000" for d in delivered)


class RefusingProducer(AIOKafkaProducer):  # type: ignore[misc]
    """A real producer that refuses the events of one subject until ``heal`` is set."""

    def __init__(self, poison_key: bytes, heal: asyncio.Event, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.poison_key = poison_key
        self.heal = heal
        self.refused = 0

    async def send(self, topic: str, value: Any = None, key: Any = None, **kw: Any) -> Any:
        if key == self.poison_key and not self.heal.is_set():
            self.refused += 1
            raise KafkaTimeoutError("refused by the test")
        return await super().send(topic, value, key=key, **kw)


async def test_invariant_2_rows_are_marked_sent_only_after_kafka_acknowledged(
    db_pool: asyncpg.Pool, relay_settings: Settings, kafka_bootstrap: str, topic_prefix: str
) -> None:
    before = [image_event(f"crpbefore{n:011d}", n) for n in range(30)]
    poison = image_event("crppoison00000000000", 30)
    after = [image_event(f"crpafter{n:012d}", n) for n in range(31, 60)]
    await append(db_pool, [*before, poison, *after], per_transaction=7)
    heal = asyncio.Event()
    producers: list[RefusingProducer] = []

    def factory(bootstrap: str) -> AIOKafkaProducer:
        producer = RefusingProducer(
            poison.subject.encode(), heal, bootstrap_servers=bootstrap,
            enable_idempotence=True, acks="all", linger_ms=5,
        )  # fmt: skip
        producers.append(producer)
        return producer

    relay = Relay(db_pool, relay_settings, options=FAST, producer_factory=factory)
    async with running(relay):

        async def refused_twice() -> bool:
            return sum(p.refused for p in producers) >= 2

        await wait_until(refused_twice, "the relay retried the refused event")
        rows = await committed_events(db_pool)
        sent = [r["key"] for r in rows if r["sent_at"] is not None]
        # Everything before the refused event is out; nothing from it on is marked.
        assert sent == [e.subject for e in before]
        on_kafka = await read_topics(
            kafka_bootstrap, topic_prefix, expect_ids={r["event_id"] for r in rows[:30]}
        )
        assert {d.key for d in on_kafka} == {e.subject for e in before}, (
            "later events overtook the refused one"
        )
        heal.set()
        await wait_all_sent(db_pool)

    committed = await committed_events(db_pool)
    delivered = await read_topics(
        kafka_bootstrap, topic_prefix, expect_ids={r["event_id"] for r in committed}
    )
    assert_exactly_once_in_commit_order(delivered, committed)


async def test_invariant_3_events_of_one_key_arrive_in_commit_order(
    db_pool: asyncpg.Pool, relay_settings: Settings, kafka_bootstrap: str, topic_prefix: str
) -> None:
    # Concurrent writers, a few hot keys: ids (and so Kafka order) must follow commit order.
    async def writer(w: int) -> None:
        for batch in range(20):
            events = keyed_events(5, keys=4, start=w * 1000 + batch * 5)
            await append(db_pool, events, per_transaction=5)

    relay = Relay(db_pool, relay_settings, options=FAST)
    async with running(relay):
        await asyncio.gather(*(writer(w) for w in range(4)))
        await wait_all_sent(db_pool)

    committed = await committed_events(db_pool)
    assert len(committed) == 400
    delivered = await read_topics(
        kafka_bootstrap, topic_prefix, expect_ids={r["event_id"] for r in committed}
    )
    counts = assert_exactly_once_in_commit_order(delivered, committed)
    assert counts["keys"] == 4


async def test_invariant_3_one_relay_is_active_at_a_time(
    db_pool: asyncpg.Pool, relay_settings: Settings
) -> None:
    async with db_pool.acquire() as holder:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY)
        await append(db_pool, keyed_events(10, keys=3))
        result = await run_relay(
            db_pool, relay_settings, stop=asyncio.Event(), once=True, options=FAST
        )
        assert not result.was_active
        assert result.published == 0
        assert await unsent_count(db_pool) == 10
        await holder.execute("SELECT pg_advisory_unlock($1)", RELAY_LOCK_KEY)
    result = await run_relay(db_pool, relay_settings, stop=asyncio.Event(), once=True, options=FAST)
    assert result.was_active and result.published == 10


async def test_standby_takes_over_when_the_active_relay_stops(
    db_pool: asyncpg.Pool, relay_settings: Settings, kafka_bootstrap: str, topic_prefix: str
) -> None:
    first, second = (
        Relay(db_pool, relay_settings, options=FAST),
        Relay(db_pool, relay_settings, options=FAST),
    )
    stop_first = asyncio.Event()
    first_task = asyncio.create_task(first.run(stop_first))
    await append(db_pool, keyed_events(50, keys=5))
    await wait_all_sent(db_pool)
    async with running(second):
        await append(db_pool, keyed_events(50, keys=5, start=50))
        await wait_all_sent(db_pool)
        assert (first.published, second.published) == (50 + 50, 0)  # the standby waited
        stop_first.set()
        await asyncio.wait_for(first_task, 30)
        await append(db_pool, keyed_events(50, keys=5, start=100))
        await wait_all_sent(db_pool)
        assert second.published == 50

    committed = await committed_events(db_pool)
    delivered = await read_topics(
        kafka_bootstrap, topic_prefix, expect_ids={r["event_id"] for r in committed}
    )
    assert_exactly_once_in_commit_order(delivered, committed)


async def test_cloudevents_headers_follow_the_spec(
    db_pool: asyncpg.Pool, relay_settings: Settings, kafka_bootstrap: str, topic_prefix: str
) -> None:
    await append(db_pool, keyed_events(20, keys=10))
    await run_relay(db_pool, relay_settings, stop=asyncio.Event(), once=True, options=FAST)
    rows = await db_pool.fetch("SELECT event_id::text, key, type, source, data FROM outbox_events")
    by_id = {r["event_id"]: r for r in rows}
    delivered = await read_topics(kafka_bootstrap, topic_prefix, expect_ids=set(by_id))
    assert len(delivered) == 20
    for d in delivered:
        h = d.headers
        # CloudEvents 1.0 required attributes, non-empty; Kafka binding: ce_ prefix.
        for attribute in ("ce_id", "ce_source", "ce_specversion", "ce_type"):
            assert h.get(attribute), f"{attribute} missing"
        assert h["ce_specversion"] == b"1.0"
        row = by_id[h["ce_id"].decode()]
        uuid.UUID(h["ce_id"].decode())
        assert h["ce_type"].decode() == row["type"] in {t.value for t in EventType}
        assert h["ce_source"].decode() == row["source"]
        assert h["ce_subject"].decode() == row["key"] == d.key
        assert RFC3339.match(h["ce_time"].decode())
        assert h["content-type"] == b"application/json"
        assert d.topic == f"{topic_prefix}.{EventType(row['type']).topic}"
        assert orjson.loads(d.value) == row["data"]


async def test_topics_are_created_with_the_configured_partitions(
    db_pool: asyncpg.Pool, relay_settings: Settings, kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = relay_settings.with_(kafka_partitions=5)
    await run_relay(db_pool, settings, stop=asyncio.Event(), once=True, options=FAST)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        names = [f"{topic_prefix}.images", f"{topic_prefix}.blobs"]
        described = {t["topic"]: t for t in await admin.describe_topics(names)}
    finally:
        await admin.close()
    for name in names:
        assert described[name]["error_code"] == 0, f"{name} was not created"
        assert len(described[name]["partitions"]) == 5


async def test_a_notify_wakes_the_relay_without_waiting_for_the_poll(
    db_pool: asyncpg.Pool, relay_settings: Settings
) -> None:
    # The fallback poll is an hour away: only the NOTIFY from append_events can wake it.
    options = RelayOptions(batch_size=100, poll_interval=3600, retry_backoff=0.1)
    relay = Relay(db_pool, relay_settings, options=options)
    async with running(relay):
        await append(db_pool, keyed_events(5, keys=5))
        await wait_all_sent(db_pool)
        await asyncio.sleep(0.3)  # the relay is now parked in its wait
        await append(db_pool, keyed_events(5, keys=5, start=5))
        await wait_all_sent(db_pool, limit=30)
    assert relay.published == 10


async def test_retention_deletes_only_sent_rows_older_than_the_setting(
    db_pool: asyncpg.Pool, relay_settings: Settings
) -> None:
    await append(db_pool, keyed_events(30, keys=3))
    # the first 10 were sent 8 days ago, the next 10 six days ago (sql/103)
    await db_pool.execute(
        "INSERT INTO outbox_sent (up_to, sent_at) "
        "SELECT id, now() - interval '8 days' FROM outbox ORDER BY id OFFSET 9 LIMIT 1"
    )
    await db_pool.execute(
        "INSERT INTO outbox_sent (up_to, sent_at) "
        "SELECT id, now() - interval '6 days' FROM outbox ORDER BY id OFFSET 19 LIMIT 1"
    )
    old_unsent = await db_pool.fetchval(
        "UPDATE outbox SET time = now() - interval '30 days' WHERE id = "
        "(SELECT max(id) FROM outbox) RETURNING id"
    )
    result = await run_relay(db_pool, relay_settings, stop=asyncio.Event(), once=True, options=FAST)
    assert result.published == 10  # the rows that were still unsent
    rows = await committed_events(db_pool)
    assert len(rows) == 20  # the 10 sent 8 days ago are gone (default retention 7 days)
    assert old_unsent in {r["id"] for r in rows}  # never deleted before it was sent
    assert await sent_count(db_pool) == 20
    # the sent point older than the retention went with its events; the others stay
    marks = await db_pool.fetch("SELECT up_to, sent_at FROM outbox_sent ORDER BY up_to")
    assert len(marks) == 2 and marks[-1]["up_to"] == rows[-1]["id"]
