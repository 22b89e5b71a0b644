"""Reacting to registry-mirror events from Kafka: a small helper for services.

::

    from mirror.events.subscriber import EventSubscriber

    async def on_event(event):          # a ReceivedEvent
        await cache.invalidate(event.subject)

    async with EventSubscriber(
        "kafka:9092", group="cache-invalidator", types=["registry.image.deleted"]
    ) as subscriber:
        await subscriber.run(on_event, stop=stop)   # or: async for event in subscriber: ...

What it does for you:

* **consumer group**: instances sharing ``group`` split the partitions; ``group=None``
  reads every partition and commits nothing (an ephemeral reader, like ``tail -f``);
* **commit after handling**: an event's offset is committed only once the handler
  returned (with ``async for``: once you ask for the next event); commits go out every
  ``commit_interval`` seconds, on a rebalance and on close. A crash replays the
  uncommitted events: delivery is at least once, so handlers must be idempotent;
* **duplicates dropped**: the relay may publish an event again after a crash, always
  with the same ``ce_id``; the last ``dedup_capacity`` ids seen are remembered (an
  LRU) and a repeat is skipped;
* **types**: only the listed CloudEvent types (or prefixes, ``registry.tag.*``) reach
  the handler, and only their topics are read;
* **subject**: only events of this subject (image id, digest, ``<repository>:<tag>``);
* **order**: events of one subject (image id, blob digest, repository tag) arrive in the order
  they were committed; there is no order across subjects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from mirror.errors import EnvelopeError, KafkaUnavailableError
from mirror.events.envelope import (
    CONTENT_TYPE,
    SPECVERSION,
    kafka_topic,
    structured_from_kafka,
)
from mirror.events.producer import TOPICS
from mirror.model import EventType, event_types_matching

log = logging.getLogger(__name__)

DEFAULT_TOPIC_PREFIX = "registry-mirror"
DEFAULT_DEDUP_CAPACITY = 100_000
POLL_TIMEOUT_MS = 500
MISSING_TOPIC_REFRESH_MS = 3000


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """One CloudEvent read from Kafka, with where it was read from."""

    id: str
    type: str
    source: str
    subject: str
    time: datetime | None
    data: Any
    topic: str
    partition: int
    offset: int
    attributes: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The structured CloudEvents JSON form (as ``/mirror/v1/events`` serves it)."""
        out: dict[str, Any] = {"specversion": SPECVERSION}
        out.update(self.attributes)
        out.setdefault("datacontenttype", CONTENT_TYPE)
        out["data"] = self.data
        return out


def received_event(
    topic: str,
    partition: int,
    offset: int,
    headers: Iterable[tuple[str, bytes | None]],
    value: bytes | None,
) -> ReceivedEvent:
    """Decode a binary-mode CloudEvents Kafka record; ``EnvelopeError`` if it is not one."""
    attributes = structured_from_kafka(headers, value)
    data = attributes.pop("data", None)
    raw_time = attributes.get("time")
    try:
        moment = datetime.fromisoformat(raw_time) if raw_time else None
    except ValueError:
        raise EnvelopeError(f"ce_time {raw_time!r} is not RFC 3339") from None
    return ReceivedEvent(
        id=attributes["id"],
        type=attributes["type"],
        source=attributes["source"],
        subject=attributes.get("subject", ""),
        time=moment,
        data=data,
        topic=topic,
        partition=partition,
        offset=offset,
        attributes=attributes,
    )


class SeenIds:
    """The most recent ``capacity`` event ids, least recently seen evicted first."""

    def __init__(self, capacity: int = DEFAULT_DEDUP_CAPACITY) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self._capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, event_id: str) -> bool:
        """Remember ``event_id``; True if it was not seen (within the window) before."""
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)


def topics_for(types: Collection[str] | None, prefix: str) -> list[str]:
    """The Kafka topics that carry ``types`` (types or ``registry.tag.*`` prefixes; all of
    ours when None)."""
    if not types:
        return [kafka_topic(prefix, t) for t in TOPICS]
    try:
        suffixes = sorted({EventType(t).topic for t in event_types_matching(types)})
    except ValueError as exc:
        raise ValueError(f"unknown event type: {exc}") from None
    return [kafka_topic(prefix, s) for s in suffixes]


@dataclass
class SubscriberStats:
    delivered: int = 0  # handed to you
    duplicates: int = 0  # dropped: ce_id seen before
    filtered: int = 0  # dropped: a type you did not ask for
    invalid: int = 0  # dropped: not a CloudEvent (logged)


class EventSubscriber:
    """A Kafka consumer of registry-mirror events; see the module docstring."""

    def __init__(
        self,
        bootstrap: str,
        *,
        group: str | None,
        types: Collection[str] | None = None,
        subject: str | None = None,
        topic_prefix: str = DEFAULT_TOPIC_PREFIX,
        from_beginning: bool = False,
        dedup_capacity: int = DEFAULT_DEDUP_CAPACITY,
        commit_interval: float = 1.0,
        client_id: str = "registry-mirror-subscriber",
    ) -> None:
        self.topics = topics_for(types, topic_prefix)
        self._types = frozenset(event_types_matching(types)) if types else None
        self._subject = subject or None
        self._group = group
        self._seen = SeenIds(dedup_capacity)
        self._commit_interval = commit_interval
        self._handled: dict[TopicPartition, int] = {}  # next offset to commit
        self._buffer: deque[ConsumerRecord[bytes, bytes]] = deque()  # fetched, not yet returned
        self._current: ConsumerRecord[bytes, bytes] | None = None  # returned, not yet handled
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = time.monotonic()
        self.stats = SubscriberStats()
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._from_beginning = from_beginning
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        missing = await self._missing_topics()
        # With a group, `from_beginning` applies where the group has no committed
        # offset yet (as kafka-console-consumer does); without one, always. A topic
        # that does not exist yet (the relay never ran) is read from its beginning
        # once it appears: everything in it was published after we started.
        earliest = self._from_beginning or bool(missing)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._group,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if earliest else "latest",
            # Notice the missing topics within seconds, not the default 5 minutes.
            metadata_max_age_ms=MISSING_TOPIC_REFRESH_MS if missing else 5 * 60 * 1000,
        )
        try:
            await consumer.start()
        except KafkaError as exc:
            with contextlib.suppress(KafkaError):
                await consumer.stop()
            raise KafkaUnavailableError(f"Kafka at {self._bootstrap}: {exc!r}") from exc
        if missing:
            log.info("waiting for topics %s to appear", ", ".join(sorted(missing)))
        consumer.subscribe(self.topics, listener=_CommitOnRevoke(self))
        self._consumer = consumer

    async def _missing_topics(self) -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, client_id=self._client_id)
        try:
            await admin.start()
            return set(self.topics) - set(await admin.list_topics())
        except KafkaError as exc:
            raise KafkaUnavailableError(f"Kafka at {self._bootstrap}: {exc!r}") from exc
        finally:
            await admin.close()

    @property
    def consumer(self) -> AIOKafkaConsumer:
        """The aiokafka consumer (after ``start``)."""
        if self._consumer is None:
            raise RuntimeError("the subscriber is not started: use `async with` or start()")
        return self._consumer

    async def stop(self) -> None:
        """Commit what was handled, then leave the group and close."""
        if self._consumer is None:
            return
        try:
            await self.commit()
        finally:
            await self._consumer.stop()
            self._consumer = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ReceivedEvent:
        """The next new event, duplicates and unwanted types dropped.

        The event returned before counts as handled now (its offset may be
        committed): leaving the loop leaves the current event uncommitted.
        """
        self._mark_handled()
        while True:
            if not self._buffer:
                if time.monotonic() - self._last_commit >= self._commit_interval:
                    await self.commit()
                batches = await self.consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
                for records in batches.values():
                    self._buffer.extend(records)
                continue
            record = self._buffer.popleft()
            self._current = record
            event = self._accept(record)
            if event is not None:
                self.stats.delivered += 1
                return event
            self._mark_handled()  # nothing to handle in a skipped record

    async def run(
        self,
        handler: Callable[[ReceivedEvent], Awaitable[None]],
        *,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Call ``handler`` for each event until ``stop`` is set. An event is handled
        when its handler returns; an exception propagates and leaves it uncommitted
        (it is delivered again after a restart)."""
        stop = stop or asyncio.Event()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                next_event = asyncio.ensure_future(self.__anext__())
                await asyncio.wait({next_event, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not next_event.done():
                    next_event.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await next_event
                    break
                await handler(next_event.result())
                self._mark_handled()
        finally:
            stopping.cancel()

    async def commit(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Commit the offsets of the handled events (no-op without a group)."""
        self._last_commit = time.monotonic()
        if self._group is None:
            return
        wanted = set(partitions) if partitions is not None else None
        offsets = {
            tp: offset
            for tp, offset in self._handled.items()
            if self._committed.get(tp) != offset and (wanted is None or tp in wanted)
        }
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            # At least once: the events are delivered again, the LRU drops what it remembers.
            log.warning("could not commit offsets (%r); they will be delivered again", exc)
            return
        self._committed.update(offsets)

    def _mark_handled(self) -> None:
        record, self._current = self._current, None
        if record is not None:
            self._handled[TopicPartition(record.topic, record.partition)] = record.offset + 1

    def _accept(self, record: ConsumerRecord[bytes, bytes]) -> ReceivedEvent | None:
        where = (record.topic, record.partition, record.offset)
        try:
            event = received_event(*where, record.headers, record.value)
        except (EnvelopeError, ValueError) as exc:
            self.stats.invalid += 1
            log.warning("skipping %s[%d]@%d: %s", *where, exc)
            return None
        if not self._seen.add(event.id):
            self.stats.duplicates += 1
            return None
        if (self._types is not None and event.type not in self._types) or (
            self._subject is not None and event.subject != self._subject
        ):
            self.stats.filtered += 1
            return None
        return event

    def _forget(self, partitions: Iterable[TopicPartition]) -> None:
        gone = set(partitions)
        for tp in gone:
            self._handled.pop(tp, None)
            self._committed.pop(tp, None)
        # Fetched records of partitions now owned by another member are theirs to handle.
        self._buffer = deque(
            r for r in self._buffer if TopicPartition(r.topic, r.partition) not in gone
        )


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commit what was handled before partitions move to another group member."""

    def __init__(self, subscriber: EventSubscriber) -> None:
        self._subscriber = subscriber

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = list(revoked)
        await self._subscriber.commit(revoked)
        self._subscriber._forget(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        return None
