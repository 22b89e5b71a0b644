"""The relay's view of the outbox: unsent rows in id order, marking them sent, retention.

Writers append in commit order (``mirror.store.outbox``), so the unsent rows read in
``id`` order are the events in the order their changes committed. Only the active
relay (the holder of ``RELAY_LOCK_KEY``) calls the writing functions here.
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from mirror.events.envelope import OutboxEvent

# Session advisory lock of the one active relay ("mirror" + 3; the migrator uses
# + 1 and the outbox writers + 2). Advisory locks are per database.
RELAY_LOCK_KEY = 0x6D69_7272_6F72_0003
OUTBOX_CHANNEL = "mirror_outbox"  # mirror.store.outbox.append_events notifies it

# The session is named first, so whoever sees the lock held sees whose it is
# (pg_stat_activity.application_name); relay sessions commit without waiting for
# the WAL flush: a "sent" mark lost in a database crash only makes the relay send
# those events again (same ce_id), it never loses one.
TRY_LOCK = """
SELECT set_config('application_name', $2, false),
       set_config('synchronous_commit', 'off', false),
       pg_try_advisory_lock($1) AS locked
"""
UNLOCK = "SELECT pg_advisory_unlock($1)"
# payload: the stored JSON text goes to Kafka byte for byte, never parsed and re-dumped;
# outbox_events: image.created, blob and tag payloads may be derived (sql/100, 101).
CLAIM_BATCH = """
SELECT id, event_id, topic, key, type, source, time, payload AS data
FROM outbox_events
WHERE sent_at IS NULL AND id > $2
ORDER BY id
LIMIT $1
"""
# The batch is a run of consecutive unsent ids (nothing can commit inside it later:
# ids follow commit order), so a range marks exactly the rows that were sent.
MARK_SENT = """
UPDATE outbox SET sent_at = now()
WHERE id BETWEEN $1 AND $2 AND sent_at IS NULL
"""
OLDEST_UNSENT_AGE = """
SELECT extract(epoch FROM clock_timestamp() - time)::float8
FROM outbox
WHERE sent_at IS NULL
ORDER BY id
LIMIT 1
"""
# In slices, so a large backlog of expired rows never holds locks for long.
DELETE_EXPIRED = """
DELETE FROM outbox
WHERE id IN (
    SELECT id FROM outbox
    WHERE sent_at IS NOT NULL AND sent_at < now() - $1::interval
    ORDER BY sent_at
    LIMIT $2
)
"""
DELETE_SLICE = 10_000


async def try_lock_relay(conn: asyncpg.Connection, identity: str) -> bool:
    """Take the active-relay lock on this session if nobody holds it; the session is
    named ``identity`` either way."""
    row = await conn.fetchrow(TRY_LOCK, RELAY_LOCK_KEY, identity)
    return bool(row is not None and row["locked"])


async def unlock_relay(conn: asyncpg.Connection) -> None:
    await conn.fetchval(UNLOCK, RELAY_LOCK_KEY)


async def claim_outbox_batch(
    conn: asyncpg.Connection, limit: int, *, after: int = 0
) -> list[OutboxEvent]:
    """The oldest unsent events past outbox id ``after``, at most ``limit``, in commit order."""
    rows = await conn.fetch(CLAIM_BATCH, limit, after)
    return [OutboxEvent.from_row(row) for row in rows]


async def mark_sent(conn: asyncpg.Connection, first_id: int, last_id: int) -> int:
    """Mark the unsent rows ``first_id..last_id`` sent; returns how many were."""
    status = await conn.execute(MARK_SENT, first_id, last_id)
    return int(status.split()[-1])


async def oldest_unsent_age(conn: asyncpg.Connection) -> float:
    """Seconds since the oldest unsent event was written; 0 when none waits."""
    age = await conn.fetchval(OLDEST_UNSENT_AGE)
    return max(0.0, float(age)) if age is not None else 0.0


async def delete_expired(conn: asyncpg.Connection, retention: timedelta) -> int:
    """Delete events sent longer than ``retention`` ago; returns how many were deleted."""
    total = 0
    while True:
        status = await conn.execute(DELETE_EXPIRED, retention, DELETE_SLICE)
        deleted = int(status.split()[-1])
        total += deleted
        if deleted < DELETE_SLICE:
            return total
