"""The outbox relay: publishes committed change events to Kafka, in commit order, at least once.

How it keeps ARCHITECTURE.md's invariants 2 and 3:

* **One active relay.** The active relay holds a session advisory lock
  (``RELAY_LOCK_KEY``) on one connection for as long as it publishes, and does all
  its outbox work on that connection. Standbys poll ``pg_try_advisory_lock``; a
  relay that dies takes its session, and so its lock, with it, and a standby
  takes over within ``lock_poll_interval``.
* **Acknowledged, then marked.** A batch is the oldest unsent rows in ``id``
  (= commit) order, sent through one idempotent producer (``acks=all``). Only
  when Kafka has acknowledged records is the acknowledged *prefix* of the batch
  marked sent, in one statement that moves the relay's sent point past it
  (``outbox_sent``, sql/103; no outbox row is written). A failure stops the
  prefix at the first unacknowledged row and the next round starts there:
  nothing is skipped, and a row sent twice carries the same ``ce_id``.
* **Order per key.** One producer sends in ``id`` order and the key (image id or
  digest) picks the partition, so one key's events are appended to one partition
  in commit order.

The relay wakes on ``LISTEN mirror_outbox`` (``append_events`` notifies it on
commit) and polls every ``poll_interval`` as a fallback. It also deletes sent
rows older than ``MIRROR_EVENTS_RETENTION``, so ``/mirror/v1/events`` keeps that
much history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import Enum

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from mirror.errors import ConfigError, KafkaUnavailableError
from mirror.events.envelope import OutboxEvent, to_kafka_record
from mirror.events.pending import (
    OUTBOX_CHANNEL,
    claim_outbox_batch,
    delete_expired,
    mark_sent,
    oldest_unsent_age,
    try_lock_relay,
    unlock_relay,
)
from mirror.events.producer import (
    compression_type,
    create_producer,
    ensure_topics,
    topic_specs,
)
from mirror.settings import Settings

log = logging.getLogger(__name__)

EVENTS_PUBLISHED = Counter(
    "mirror_relay_events_published_total",
    "Outbox events acknowledged by Kafka and marked sent.",
    ["topic"],
)
BATCHES = Counter(
    "mirror_relay_batches_total",
    "Relay batches: published (every record acknowledged) or failed (retried).",
    ["outcome"],
)
EVENTS_EXPIRED = Counter(
    "mirror_relay_events_expired_total",
    "Sent outbox events deleted after the retention period.",
)
LAG = Gauge(
    "mirror_relay_lag_seconds",
    "Age of the oldest unsent outbox event (0 when the outbox is drained).",
)
ACTIVE = Gauge(
    "mirror_relay_active",
    "1 while this process is the active relay, 0 while it is a standby or stopped.",
)

# Errors that mean "the database went away", after which the relay starts over
# as a standby: its session, and so its lock, may be gone.
DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)

ProducerFactory = Callable[[str], AIOKafkaProducer]

# The marking connection's session: named after the process, committing without
# waiting for the WAL flush (see mirror.events.pending.TRY_LOCK).
SESSION_SETUP = """
SELECT set_config('application_name', $1, false),
       set_config('synchronous_commit', 'off', false)
"""


@dataclass(frozen=True, slots=True)
class RelayOptions:
    """Tuning knobs; the defaults suit production."""

    batch_size: int = 1000
    pipeline_depth: int = 2  # batches in flight: the next is prepared while Kafka acks one
    poll_interval: float = 1.0  # fallback when a NOTIFY is missed
    lock_poll_interval: float = 1.0  # how often a standby tries to take over
    retention_interval: float = 300.0  # how often expired sent rows are deleted
    retry_backoff: float = 0.5  # first pause after a failure, doubled up to the max
    max_retry_backoff: float = 10.0
    ack_warn_interval: float = 10.0  # log while Kafka keeps a batch waiting this long
    shutdown_timeout: float = 10.0  # for flushing the producer when stopping


class _Outcome(Enum):
    DRAINED = "drained"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class _Batch:
    """Events handed to the producer and, one for each sent so far, Kafka's answers."""

    events: list[OutboxEvent]
    futures: list[asyncio.Future[object]]
    refused: bool  # the producer refused an event: the rest of the batch was not sent


class _SentMarker:
    """Marks acknowledged events sent, one UPDATE at a time and in order.

    With ``overlap`` (its own connection) an UPDATE runs while the relay claims and
    sends the next batch; ``flush`` waits for it. Claims never see a row that is
    acknowledged but not yet marked: they follow a cursor past it, and start again
    from the first unsent row only after a ``flush``.
    """

    def __init__(
        self,
        conn: asyncpg.Connection,
        on_marked: Callable[[list[OutboxEvent]], None],
        *,
        overlap: bool,
    ) -> None:
        self._conn = conn
        self._on_marked = on_marked
        self._overlap = overlap
        self._pending: asyncio.Task[None] | None = None

    async def mark(self, events: list[OutboxEvent]) -> None:
        await self.flush()
        if self._overlap:
            self._pending = asyncio.create_task(self._mark(events))
        else:
            await self._mark(events)

    async def flush(self) -> None:
        task, self._pending = self._pending, None
        if task is not None:
            await task

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()

    async def _mark(self, events: list[OutboxEvent]) -> None:
        await mark_sent(self._conn, events[-1].id)
        self._on_marked(events)


@dataclass(frozen=True, slots=True)
class RelayResult:
    published: int  # events acknowledged and marked sent by this relay
    was_active: bool  # False when another relay held the lock throughout (``once``)


class Relay:
    """Publishes the outbox to Kafka while this process is the active relay.

    ``run`` returns when ``stop`` is set or, with ``once``, when the outbox has been
    drained (or another relay was found active).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        *,
        options: RelayOptions | None = None,
        producer_factory: ProducerFactory | None = None,
    ) -> None:
        if settings.kafka_bootstrap is None:
            raise ConfigError(
                "MIRROR_KAFKA_BOOTSTRAP is not set: events stay in PostgreSQL "
                "(readable at /mirror/v1/events) and no relay runs"
            )
        self._pool = pool
        self._settings = settings
        self._bootstrap = settings.kafka_bootstrap
        self._options = options or RelayOptions()
        # MIRROR_KAFKA_COMPRESSION is checked here, at start: a missing codec is a ConfigError.
        compression = settings.kafka_compression
        compression_type(compression)
        self._producer_factory = producer_factory or (
            lambda bootstrap: create_producer(bootstrap, compression)
        )
        self._identity = f"mirror-relay {socket.gethostname()} pid {os.getpid()}"
        self.published = 0

    async def run(self, stop: asyncio.Event, *, once: bool = False) -> RelayResult:
        backoff = self._options.retry_backoff
        standby_logged = False
        was_active = False
        while not stop.is_set():
            try:
                async with self._pool.acquire() as conn:
                    if await try_lock_relay(conn, self._identity):
                        was_active = True
                        standby_logged = False
                        try:
                            await self._lead(conn, stop, once=once)
                        finally:
                            ACTIVE.set(0)
                            LAG.set(0)  # the active relay reports the lag now
                            with contextlib.suppress(*DATABASE_ERRORS):
                                await unlock_relay(conn)
                        if once:
                            break
                        backoff = self._options.retry_backoff
                        continue
            except DATABASE_ERRORS as exc:
                log.warning("relay: database error (%r); retrying in %.1fs", exc, backoff)
                await _wait(stop, backoff)
                backoff = min(backoff * 2, self._options.max_retry_backoff)
                continue
            if once:
                log.info("another relay is active and publishes the outbox; nothing to do")
                break
            if not standby_logged:
                log.info(
                    "standby: another relay is active; trying to take over every %.1fs",
                    self._options.lock_poll_interval,
                )
                standby_logged = True
            await _wait(stop, self._options.lock_poll_interval)
        return RelayResult(self.published, was_active)

    # -- the active relay

    async def _lead(self, conn: asyncpg.Connection, stop: asyncio.Event, *, once: bool) -> None:
        ACTIVE.set(1)
        log.info(
            "active relay (%s): publishing to %s, topics %s.{images,blobs,tags}, compression %s",
            self._identity,
            self._bootstrap,
            self._settings.kafka_topic_prefix,
            compression_type(self._settings.kafka_compression) or "none",
        )  # fmt: skip
        wake = asyncio.Event()

        def on_notify(*_: object) -> None:
            wake.set()

        await conn.add_listener(OUTBOX_CHANNEL, on_notify)
        try:
            producer = await self._start_producer(stop, once=once)
            if producer is None:
                return
            try:
                async with self._marking_connection(conn) as marker:
                    await self._publish_loop(conn, producer, marker, stop, wake, once=once)
            finally:
                await self._stop_producer(producer)
        finally:
            if not conn.is_closed():
                with contextlib.suppress(*DATABASE_ERRORS):
                    await conn.remove_listener(OUTBOX_CHANNEL, on_notify)

    @contextlib.asynccontextmanager
    async def _marking_connection(self, conn: asyncpg.Connection) -> AsyncIterator[_SentMarker]:
        """A second connection for marking batches sent while the next one is claimed
        (the lock connection itself when the pool has room for one only)."""
        if self._pool.get_max_size() < 2:
            yield _SentMarker(conn, self._record_sent, overlap=False)
            return
        async with self._pool.acquire() as mark_conn:
            await mark_conn.execute(SESSION_SETUP, self._identity)
            marker = _SentMarker(mark_conn, self._record_sent, overlap=True)
            try:
                yield marker
            finally:
                marker.cancel()

    def _record_sent(self, events: list[OutboxEvent]) -> None:
        self.published += len(events)
        for topic, count in Tally(e.topic for e in events).items():
            EVENTS_PUBLISHED.labels(topic).inc(count)

    async def _publish_loop(
        self,
        conn: asyncpg.Connection,
        producer: AIOKafkaProducer,
        marker: _SentMarker,
        stop: asyncio.Event,
        wake: asyncio.Event,
        *,
        once: bool,
    ) -> None:
        next_retention = 0.0
        while not stop.is_set():
            wake.clear()  # before draining: a NOTIFY during the drain wakes the next wait
            drained = await self._drain(conn, producer, marker, stop)
            LAG.set(await oldest_unsent_age(conn))
            if time.monotonic() >= next_retention or (once and drained):
                await self._expire(conn)
                next_retention = time.monotonic() + self._options.retention_interval
            if once and drained:
                return
            await _wait(stop, self._options.poll_interval, wake)

    async def _drain(
        self,
        conn: asyncpg.Connection,
        producer: AIOKafkaProducer,
        marker: _SentMarker,
        stop: asyncio.Event,
    ) -> bool:
        """Publish until the outbox is empty (True) or ``stop`` is set (False)."""
        backoff = self._options.retry_backoff
        while not stop.is_set():
            try:
                outcome = await self._pipeline(conn, producer, marker, stop)
            finally:
                await marker.flush()  # every acknowledged batch marked before going on
            if outcome is not _Outcome.FAILED:
                return outcome is _Outcome.DRAINED
            BATCHES.labels("failed").inc()
            LAG.set(await oldest_unsent_age(conn))
            log.warning("relay: retrying from the first unacknowledged event in %.1fs", backoff)
            await _wait(stop, backoff)
            backoff = min(backoff * 2, self._options.max_retry_backoff)
        return False

    async def _pipeline(
        self,
        conn: asyncpg.Connection,
        producer: AIOKafkaProducer,
        marker: _SentMarker,
        stop: asyncio.Event,
    ) -> _Outcome:
        """Claim, send and mark batches, ``pipeline_depth`` of them in flight.

        While Kafka compresses and acknowledges one batch, the next is claimed and
        handed to the producer, and the one before is being marked sent. Batches
        are marked in order, each only up to its first unacknowledged event; a
        failure ends the pipeline (after the later batches settle) so the next
        round starts again from that event.
        """
        window: deque[_Batch] = deque()
        cursor = 0
        exhausted = False
        while True:
            while not exhausted and len(window) < self._options.pipeline_depth:
                if stop.is_set():
                    break
                events = await claim_outbox_batch(conn, self._options.batch_size, after=cursor)
                if not events:
                    exhausted = True
                    break
                batch = await self._send(producer, events)
                window.append(batch)
                cursor = events[-1].id
                exhausted = len(events) < self._options.batch_size or batch.refused
            if not window:
                return _Outcome.STOPPED if stop.is_set() else _Outcome.DRAINED
            batch = window.popleft()
            acked = await self._acknowledged(batch, stop)
            events = batch.events
            if acked:
                await marker.mark(events[:acked])
            if acked < len(events):
                if stop.is_set():
                    return _Outcome.STOPPED
                log.warning(
                    "relay: Kafka acknowledged %d of %d events; outbox id %d and later stay unsent",
                    acked, len(events), events[acked].id,
                )  # fmt: skip
                # Let the later batches settle: whatever of them Kafka took is sent
                # again with the same ce_id, after the events before it.
                for later in window:
                    await self._acknowledged(later, stop)
                return _Outcome.FAILED
            BATCHES.labels("published").inc()

    async def _send(self, producer: AIOKafkaProducer, events: list[OutboxEvent]) -> _Batch:
        """Hand ``events`` to the producer in order (it batches, compresses and sends them)."""
        prefix = self._settings.kafka_topic_prefix
        futures: list[asyncio.Future[object]] = []
        for event in events:
            record = to_kafka_record(event, prefix)
            try:
                futures.append(
                    await producer.send(
                        record.topic, record.value, key=record.key, headers=list(record.headers)
                    )
                )
            except KafkaError as exc:
                # Later events must not overtake this one: send no more.
                log.warning("relay: Kafka refused outbox id %d: %r", event.id, exc)
                return _Batch(events, futures, refused=True)
        return _Batch(events, futures, refused=False)

    async def _acknowledged(self, batch: _Batch, stop: asyncio.Event) -> int:
        """Wait for Kafka's answers; return how many events, from the first, it acknowledged."""
        futures = batch.futures
        pending: set[asyncio.Future[object]] = set(futures)
        waited = 0.0
        while pending:
            _, pending = await asyncio.wait(pending, timeout=self._options.ack_warn_interval)
            if pending:
                waited += self._options.ack_warn_interval
                log.warning(
                    "relay: Kafka has not acknowledged %d of %d events after %.0fs; waiting",
                    len(pending), len(futures), waited,
                )  # fmt: skip
                if stop.is_set():
                    break
        acked = 0
        for future in futures:
            if not future.done() or future.cancelled():
                break
            error = future.exception()
            if error is not None:
                log.warning("relay: Kafka failed outbox id %d: %r", batch.events[acked].id, error)
                break
            acked += 1
        return acked

    async def _expire(self, conn: asyncpg.Connection) -> None:
        deleted = await delete_expired(conn, self._settings.events_retention)
        if deleted:
            EVENTS_EXPIRED.inc(deleted)
            log.info(
                "deleted %d events sent more than %s ago", deleted, self._settings.events_retention
            )

    async def _start_producer(self, stop: asyncio.Event, *, once: bool) -> AIOKafkaProducer | None:
        """A started producer, with the topics in place; None if stopped while waiting for Kafka."""
        backoff = self._options.retry_backoff
        while not stop.is_set():
            producer = self._producer_factory(self._bootstrap)
            try:
                await ensure_topics(self._bootstrap, topic_specs(self._settings))
                await producer.start()
                return producer
            except (KafkaError, KafkaUnavailableError) as exc:
                with contextlib.suppress(KafkaError):
                    await producer.stop()
                if once:
                    raise KafkaUnavailableError(
                        f"Kafka at {self._bootstrap} is unavailable: {exc}"
                    ) from exc
                log.warning("relay: Kafka unavailable (%s); retrying in %.1fs", exc, backoff)
                await _wait(stop, backoff)
                backoff = min(backoff * 2, self._options.max_retry_backoff)
        return None

    async def _stop_producer(self, producer: AIOKafkaProducer) -> None:
        try:
            await asyncio.wait_for(producer.stop(), self._options.shutdown_timeout)
        except TimeoutError:
            log.warning(
                "relay: Kafka producer did not flush in %.0fs; unacknowledged events stay unsent",
                self._options.shutdown_timeout,
            )
        except KafkaError as exc:
            log.warning("relay: stopping the Kafka producer failed: %r", exc)


async def run_relay(
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    stop: asyncio.Event,
    once: bool = False,
    options: RelayOptions | None = None,
) -> RelayResult:
    """Run the relay on ``pool`` until ``stop`` is set (or, with ``once``, the outbox is drained).

    Raises ``ConfigError`` when ``settings.kafka_bootstrap`` is unset: without Kafka
    the events stay in PostgreSQL and the caller should not start a relay.
    """
    return await Relay(pool, settings, options=options).run(stop, once=once)


async def _wait(stop: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> None:
    """Sleep up to ``seconds``; return early when ``stop`` (or ``wake``) is set."""
    events = [stop] if wake is None else [stop, wake]
    if any(e.is_set() for e in events):
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
