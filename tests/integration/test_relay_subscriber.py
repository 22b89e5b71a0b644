"""The subscriber helper (mirror/events/subscriber.py) against a real broker."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from mirror.events.relay import RelayOptions, run_relay
from mirror.events.subscriber import EventSubscriber, ReceivedEvent
from mirror.model import Event, EventType
from mirror.settings import Settings
from tests.integration.relay_support import (
    WAIT,
    Delivered,
    append,
    committed_events,
    keyed_events,
    read_topics,
    wait_until,
)

# The relay is exercised with hand-made events (not checked against the event schemas).
pytestmark = pytest.mark.synthetic_events

OPTIONS = RelayOptions(poll_interval=0.2)


@pytest.fixture
def topic_prefix() -> str:
    return f"s{uuid.uuid4().hex[:12]}"


@pytest.fixture
def relay_settings(settings: Settings, kafka_bootstrap: str, topic_prefix: str) -> Settings:
    return settings.with_(kafka_bootstrap=kafka_bootstrap, kafka_topic_prefix=topic_prefix)


async def relay_once(pool: asyncpg.Pool, settings: Settings) -> None:
    await run_relay(pool, settings, stop=asyncio.Event(), once=True, options=OPTIONS)


async def collect(subscriber: EventSubscriber, count: int) -> list[ReceivedEvent]:
    """Run the subscriber until ``count`` events were handled (bounded)."""
    received: list[ReceivedEvent] = []
    stop = asyncio.Event()

    async def handle(event: ReceivedEvent) -> None:
        received.append(event)
        if len(received) >= count:
            stop.set()

    await asyncio.wait_for(subscriber.run(handle, stop=stop), WAIT)
    return received


async def republish(bootstrap: str, records: list[Delivered]) -> None:
    """What a relay does after a crash: the same records again."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for r in records:
            await producer.send_and_wait(
                r.topic, r.value, key=r.key.encode(), headers=list(r.headers.items())
            )
        # And something that is not a CloudEvent at all.
        await producer.send_and_wait(records[0].topic, b"{}", key=b"x", headers=[])
    finally:
        await producer.stop()


async def test_duplicates_are_dropped_and_offsets_committed_after_handling(
    db_pool: asyncpg.Pool, relay_settings: Settings, kafka_bootstrap: str, topic_prefix: str
) -> None:
    await append(db_pool, keyed_events(40, keys=8))
    await relay_once(db_pool, relay_settings)
    committed = await committed_events(db_pool)
    delivered = await read_topics(
        kafka_bootstrap, topic_prefix, expect_ids={r["event_id"] for r in committed}
    )
    await republish(kafka_bootstrap, delivered[:15])

    group = f"g{uuid.uuid4().hex[:8]}"
    subscriber = EventSubscriber(
        kafka_bootstrap, group=group, topic_prefix=topic_prefix, from_beginning=True
    )
    async with subscriber:
        received = await collect(subscriber, 40)

        # Read on to the end of the topics: the 15 repeats and the stranger are skipped.
        async def unexpected(event: ReceivedEvent) -> None:
            raise AssertionError(f"delivered twice or invented: {event}")

        async def skipped_all() -> bool:
            return subscriber.stats.duplicates + subscriber.stats.invalid >= 16

        stop = asyncio.Event()
        reading = asyncio.create_task(subscriber.run(unexpected, stop=stop))
        try:
            await wait_until(skipped_all, "the repeats were read")
        finally:
            stop.set()
            await asyncio.wait_for(reading, WAIT)
    assert sorted(e.id for e in received) == sorted(r["event_id"] for r in committed)
    assert subscriber.stats.duplicates == 15
    assert subscriber.stats.invalid == 1
    first = received[0]
    assert first.time is not None and first.time.tzinfo is not None
    assert first.to_json()["specversion"] == "1.0"

    # The same group resumes after what was handled: only the new events come.
    await append(db_pool, keyed_events(5, keys=5, start=100))
    await relay_once(db_pool, relay_settings)
    async with EventSubscriber(
        kafka_bootstrap, group=group, topic_prefix=topic_prefix, from_beginning=True
    ) as again:
        fresh = await collect(again, 5)
    newest = (await committed_events(db_pool))[-5:]
    assert sorted(e.id for e in fresh) == sorted(r["event_id"] for r in newest)


async def test_types_select_events_and_topics(
    db_pool: asyncpg.Pool, relay_settings: Settings, kafka_bootstrap: str, topic_prefix: str
) -> None:
    gone = Event(EventType.IMAGE_DELETED, "crpgone0000000000001", {"reason": "api"})
    await append(db_pool, [*keyed_events(20, keys=5), gone, *keyed_events(5, keys=5, start=20)])
    await relay_once(db_pool, relay_settings)
    subscriber = EventSubscriber(
        kafka_bootstrap,
        group=None,
        types=["registry.image.deleted"],
        topic_prefix=topic_prefix,
        from_beginning=True,
    )
    assert subscriber.topics == [f"{topic_prefix}.images"]
    async with subscriber:
        [event] = await collect(subscriber, 1)
    assert (event.type, event.subject, event.data) == (
        "registry.image.deleted", "crpgone0000000000001", {"reason": "api"},
    )  # fmt: skip


async def test_type_prefixes_and_a_subject_select_tag_events(
    db_pool: asyncpg.Pool, relay_settings: Settings, kafka_bootstrap: str, topic_prefix: str
) -> None:
    def tag(name: str, image: str) -> Event:
        data = {"repository": "r1/app", "tag": name, "imageId": image, "digest": "sha256:ab"}
        return Event(EventType.TAG_ADDED, f"r1/app:{name}", data)

    moves = [tag("latest", "crp1"), tag("v1", "crp1"), tag("latest", "crp2"), tag("v2", "crp2")]
    await append(db_pool, [*keyed_events(10, keys=5), *moves])
    await relay_once(db_pool, relay_settings)
    subscriber = EventSubscriber(
        kafka_bootstrap,
        group=None,
        types=["registry.tag.*"],
        subject="r1/app:latest",
        topic_prefix=topic_prefix,
        from_beginning=True,
    )
    assert subscriber.topics == [f"{topic_prefix}.tags"]
    async with subscriber:
        events = await collect(subscriber, 2)
    assert [(e.subject, e.data["imageId"]) for e in events] == [
        ("r1/app:latest", "crp1"),
        ("r1/app:latest", "crp2"),
    ]


def test_unknown_types_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        EventSubscriber("127.0.0.1:9", group=None, types=["registry.image.renamed"])


async def test_leaving_an_async_for_loop_loses_no_event(
    db_pool: asyncpg.Pool, relay_settings: Settings, kafka_bootstrap: str, topic_prefix: str
) -> None:
    await append(db_pool, keyed_events(30, keys=3))
    await relay_once(db_pool, relay_settings)
    committed = await committed_events(db_pool)
    seen: list[str] = []
    async with EventSubscriber(
        kafka_bootstrap, group=None, topic_prefix=topic_prefix, from_beginning=True
    ) as subscriber:
        for stop_after in (4, 30):  # leave the loop early, then come back for the rest
            async with asyncio.timeout(WAIT):
                async for event in subscriber:
                    seen.append(event.id)
                    if len(seen) >= stop_after:
                        break
    assert sorted(seen) == sorted(r["event_id"] for r in committed)


async def test_a_subscriber_started_before_the_topics_exist_gets_every_event(
    db_pool: asyncpg.Pool, relay_settings: Settings, kafka_bootstrap: str, topic_prefix: str
) -> None:
    # A fresh deployment: `mirror events tail` starts before the relay ever ran.
    async with EventSubscriber(
        kafka_bootstrap, group=None, topic_prefix=topic_prefix
    ) as subscriber:
        await append(db_pool, keyed_events(12, keys=4))
        await relay_once(db_pool, relay_settings)
        received = await collect(subscriber, 12)
    committed = await committed_events(db_pool)
    assert sorted(e.id for e in received) == sorted(r["event_id"] for r in committed)
