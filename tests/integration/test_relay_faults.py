"""Nothing lost, nothing reordered: the relay under faults, against a real broker.

Every committed change must arrive exactly once after dropping repeated ``ce_id``s,
each key's events in commit order, across (a) the relay SIGKILLed mid-batch (Kafka
acknowledged a batch whose rows are not marked sent: a row lock the test holds is the
barrier its UPDATE waits on),
(b) the Kafka broker stopped while events accumulate, (c) two relays racing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from mirror.devservices.kafka import KafkaBroker
from mirror.events.relay import Relay, RelayOptions
from mirror.settings import Settings
from tests.integration.relay_support import (
    append,
    assert_exactly_once_in_commit_order,
    committed_events,
    keyed_events,
    read_topics,
    relay_env,
    relay_lock_holders,
    sent_count,
    start_relay_process,
    stop_process,
    unsent_count,
    wait_all_sent,
    wait_sent_above,
    wait_until,
)

# Hand-made events exercise the relay (not checked against the event schemas).
pytestmark = [pytest.mark.slow, pytest.mark.synthetic_events]

FAST = RelayOptions(batch_size=100, poll_interval=0.2, lock_poll_interval=0.2, retry_backoff=0.1)


@pytest.fixture
def topic_prefix() -> str:
    return f"f{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def steady_writer(pool: asyncpg.Pool, keys: int = 25) -> AsyncIterator[None]:
    """Append events continuously (10 per transaction) until the block exits."""
    stop = asyncio.Event()

    async def write() -> None:
        n = 0
        while not stop.is_set():
            await append(pool, keyed_events(10, keys=keys, start=n), per_transaction=10)
            n += 10
            await asyncio.sleep(0.005)

    task = asyncio.create_task(write())
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def records_on_kafka(bootstrap: str, prefix: str) -> int:
    """How many records the two topics hold (0 before they exist)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [
            TopicPartition(topic, p)
            for topic in (f"{prefix}.images", f"{prefix}.blobs")
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        if not partitions:
            return 0
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


# The barrier of the kill test: the relay's sent point, locked against writes by the
# test (reads go on), so the relay's statement moving it past a batch waits on it
# (after Kafka acknowledged the batch).
LOCK_SENT_POINT = "LOCK TABLE outbox_sent IN EXCLUSIVE MODE"
# Backends waiting on a lock this session holds, and what they run.
BLOCKED_BY_ME = """
SELECT pid, query FROM pg_stat_activity
WHERE pg_backend_pid() = ANY (pg_blocking_pids(pid))
"""


@contextlib.asynccontextmanager
async def mark_barrier(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """Hold the relay's sent point against writes.

    The relay claims and publishes batches reading the point; only its statement
    moving the point (``mirror.events.pending.MARK_SENT``) writes it, so it blocks
    there: the batch is on Kafka and not marked sent.
    """
    conn = await asyncpg.connect(database_url)
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(LOCK_SENT_POINT)
        yield conn
    finally:
        await tx.rollback()
        await conn.close()


# What every backend of the database is doing, for a failure's message.
ACTIVITY = """
SELECT pid, state, wait_event_type, wait_event, left(query, 120) AS query
FROM pg_stat_activity WHERE datname = current_database()
"""


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else "(no relay log)"


# The relay's statement that moves its sent point past a batch (MARK_SENT).
MARK = "INSERT INTO outbox_sent"


async def waiting_on(barrier: asyncpg.Connection, log: Path) -> list[asyncpg.Record]:
    """The backends waiting on the barrier, once there is one: the relay's mark, or its
    expiry of old events and sent marks (``delete_expired``, after its first drain and
    every ``retention_interval``)."""
    deadline = time.monotonic() + 60
    while True:
        blocked = await barrier.fetch(BLOCKED_BY_ME)
        if blocked:
            return blocked
        if time.monotonic() >= deadline:
            activity = "\n".join(str(dict(r)) for r in await barrier.fetch(ACTIVITY))
            tail = log_tail(log)
            raise AssertionError(
                "nothing waited on the barrier\n"
                f"backends:\n{activity}\nrelay log (tail):\n{tail}"
            )
        await asyncio.sleep(0.05)


async def kill_at_the_mark(
    db_pool: asyncpg.Pool,
    database_url: str,
    process: subprocess.Popen[bytes],
    log: Path,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> int:
    """SIGKILL the relay while its mark waits on the barrier, with a batch on Kafka that is
    not marked sent; how many events were marked sent then. When its expiry is what waits
    instead, the barrier is let go for it and set again."""
    for _ in range(10):
        async with mark_barrier(database_url) as barrier:
            blocked = await waiting_on(barrier, log)
            if not any(MARK in r["query"] for r in blocked):
                continue  # the expiry: it goes on once the barrier is let go
            # Kafka holds the waiting batch; its rows are not marked sent.
            sent = await sent_count(db_pool)
            assert await records_on_kafka(kafka_bootstrap, topic_prefix) > sent
            os.kill(process.pid, signal.SIGKILL)
            assert await asyncio.to_thread(process.wait, 30) == -signal.SIGKILL
            # The dead relay's backend would still apply its UPDATE once the lock
            # goes: end it first, as a crash of the relay's host would.
            for row in blocked:
                await barrier.fetchval("SELECT pg_terminate_backend($1)", row["pid"])

            async def gone() -> bool:
                return not await barrier.fetch(BLOCKED_BY_ME)

            await wait_until(gone, "the killed relay's backends ended")
            return sent
    raise AssertionError(f"the relay's mark never waited on the barrier\n{log_tail(log)}")


async def test_relay_killed_mid_batch_loses_nothing(
    db_pool: asyncpg.Pool,
    database_url: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    env = relay_env(database_url, kafka_bootstrap, topic_prefix, tmp_path)
    log = tmp_path / "relay.log"
    async with steady_writer(db_pool):
        for _ in range(3):
            process = start_relay_process(env, log, "--batch-size", "200")
            try:
                await wait_sent_above(db_pool, await sent_count(db_pool) + 300)
                sent = await kill_at_the_mark(
                    db_pool, database_url, process, log, kafka_bootstrap, topic_prefix
                )
                assert await sent_count(db_pool) == sent  # the batch stayed unmarked
            finally:
                stop_process(process)
        assert await unsent_count(db_pool) > 0  # the writer kept going while no relay ran

    process = start_relay_process(env, log)
    try:
        await wait_all_sent(db_pool)
    finally:
        stop_process(process)
    assert process.returncode == 0, log.read_text()[-3000:]

    committed = await committed_events(db_pool)
    delivered = await read_topics(
        kafka_bootstrap, topic_prefix, expect_ids={r["event_id"] for r in committed}
    )
    counts = assert_exactly_once_in_commit_order(delivered, committed)
    assert counts["duplicates"] > 0, counts  # the unmarked batches were sent again


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A broker this test may stop and start (same ports, same data)."""
    broker = KafkaBroker(tmp_path / "kafka")
    try:
        broker.start()
    except Exception as exc:
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip(f"cannot start a Kafka broker: {exc}")
    try:
        yield broker
    finally:
        broker.stop()


# What the relay logs when it tried Kafka and got no acknowledgement.
TRIED = ("has not acknowledged", "Kafka failed", "Kafka refused", "Kafka unavailable")


async def logged(caplog: pytest.LogCaptureFixture, texts: tuple[str, ...], after: int) -> None:
    """Until the relay logs one of ``texts`` (a record past the first ``after``): the
    barrier that says where it is, instead of a sleep."""

    async def seen() -> bool:
        return any(t in r.getMessage() for r in caplog.records[after:] for t in texts)

    await wait_until(seen, f"the relay logged one of {texts}")


async def test_broker_down_while_events_accumulate_loses_nothing(
    db_pool: asyncpg.Pool,
    settings: Settings,
    own_broker: KafkaBroker,
    topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mirror.events.relay")
    relay_settings = settings.with_(
        kafka_bootstrap=own_broker.bootstrap, kafka_topic_prefix=topic_prefix
    )
    relay = Relay(db_pool, relay_settings, options=replace(FAST, ack_warn_interval=0.5))
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await append(db_pool, keyed_events(200, keys=20))
        await wait_all_sent(db_pool)

        await asyncio.to_thread(own_broker.stop, keep_data=True)
        mark = len(caplog.records)
        await append(db_pool, keyed_events(300, keys=20, start=200))
        # the relay sent a batch and waits for Kafka's answer: nothing may be marked
        await logged(caplog, TRIED, mark)
        assert await unsent_count(db_pool) == 300
        await asyncio.to_thread(own_broker.start)
        await wait_all_sent(db_pool, limit=120)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    assert not task.exception()

    # A relay that starts while the broker is down waits for it.
    await asyncio.to_thread(own_broker.stop, keep_data=True)
    await append(db_pool, keyed_events(100, keys=20, start=500))
    stop = asyncio.Event()
    mark = len(caplog.records)
    task = asyncio.create_task(Relay(db_pool, relay_settings, options=FAST).run(stop))
    try:
        await logged(caplog, ("Kafka unavailable",), mark)  # it tried, and waits
        assert await unsent_count(db_pool) == 100
        await asyncio.to_thread(own_broker.start)
        await wait_all_sent(db_pool, limit=120)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)

    committed = await committed_events(db_pool)
    assert len(committed) == 600
    delivered = await read_topics(
        own_broker.bootstrap, topic_prefix, expect_ids={r["event_id"] for r in committed}
    )
    assert_exactly_once_in_commit_order(delivered, committed)


async def test_two_relays_racing_one_active_standby_takes_over(
    db_pool: asyncpg.Pool,
    database_url: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    env = relay_env(database_url, kafka_bootstrap, topic_prefix, tmp_path)
    logs = [tmp_path / "relay-a.log", tmp_path / "relay-b.log"]
    processes = [start_relay_process(env, path) for path in logs]
    pids = {p.pid for p in processes}
    try:
        async with steady_writer(db_pool):

            async def one_active() -> bool:
                return len(await relay_lock_holders(db_pool)) == 1

            await wait_until(one_active, "one relay holds the lock")
            for _ in range(20):  # while both run and events flow: never two active
                holders = await relay_lock_holders(db_pool)
                assert len(holders) == 1 and holders[0] in pids, holders
                await asyncio.sleep(0.1)
            active = holders[0]
            [standby] = pids - {active}
            await wait_sent_above(db_pool, 200)

            os.kill(active, signal.SIGKILL)
            killed_at = time.monotonic()

            async def standby_active() -> bool:
                return await relay_lock_holders(db_pool) == [standby]

            await wait_until(standby_active, "the standby takes over")
            takeover = time.monotonic() - killed_at
            await wait_sent_above(db_pool, await sent_count(db_pool) + 200)
        await wait_all_sent(db_pool)
    finally:
        for process in processes:
            stop_process(process)

    killed = next(p for p in processes if p.pid == active)
    survivor = next(p for p in processes if p.pid == standby)
    assert killed.returncode == -signal.SIGKILL
    assert survivor.returncode == 0
    survivor_log = logs[processes.index(survivor)].read_text()
    assert "standby: another relay is active" in survivor_log

    committed = await committed_events(db_pool)
    delivered = await read_topics(
        kafka_bootstrap, topic_prefix, expect_ids={r["event_id"] for r in committed}
    )
    counts = assert_exactly_once_in_commit_order(delivered, committed)
    print(f"race test: {counts}, standby took over {takeover:.2f}s after the kill")
