"""The relay's view of the outbox: unsent rows in id order, how far it has sent, retention.

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
# How far the relay has sent (sql/103): the events up to it, in id order.
SENT_UP_TO = "(SELECT coalesce(max(up_to), 0) FROM outbox_sent)"
# payload: the stored JSON text goes to Kafka byte for byte, never parsed and re-dumped;
# outbox_events: image.created, blob and tag payloads may be derived (sql/100, 101).
CLAIM_BATCH = f"""
SELECT id, event_id, topic, key, type, source, time, payload AS data
FROM outbox_events
WHERE id > greatest($2, {SENT_UP_TO})
ORDER BY id
LIMIT $1
"""
# The batch is a run of consecutive ids past the sent point (nothing can commit
# inside it later: ids follow commit order), so moving the point to its last id
# marks exactly the rows that were sent. Within the minute of the newest row, that
# row moves (and takes the later time: an event is never deleted before its
# retention is over); otherwise a row is added. At most one row a minute of sending.
MARK_SENT = """
WITH newest AS (
    SELECT up_to FROM outbox_sent ORDER BY up_to DESC LIMIT 1
), moved AS (
    UPDATE outbox_sent AS s SET up_to = $1, sent_at = now()
    FROM newest
    WHERE s.up_to = newest.up_to AND s.up_to < $1
      AND date_trunc('minute', s.sent_at) = date_trunc('minute', now())
    RETURNING s.up_to
)
INSERT INTO outbox_sent (up_to, sent_at)
SELECT $1, now()
WHERE NOT EXISTS (SELECT FROM moved)
  AND $1 > coalesce((SELECT up_to FROM newest), 0)
"""
OLDEST_UNSENT_AGE = f"""
SELECT extract(epoch FROM clock_timestamp() - time)::float8
FROM outbox
WHERE id > {SENT_UP_TO}
ORDER BY id
LIMIT 1
"""
# In slices, so a large backlog of expired rows never holds locks for long. The
# events covered by a sent row older than the retention go, then such rows, except
# the newest (the sent point itself).
DELETE_EXPIRED = """
DELETE FROM outbox
WHERE id IN (
    SELECT id FROM outbox
    WHERE id <= (SELECT max(up_to) FROM outbox_sent WHERE sent_at < now() - $1::interval)
    ORDER BY id
    LIMIT $2
)
"""
DELETE_EXPIRED_MARKS = """
DELETE FROM outbox_sent
WHERE sent_at < now() - $1::interval
  AND up_to < (SELECT max(up_to) FROM outbox_sent)
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


async def mark_sent(conn: asyncpg.Connection, last_id: int) -> None:
    """Record that every event up to outbox id ``last_id`` has been sent."""
    await conn.execute(MARK_SENT, last_id)


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
            await conn.execute(DELETE_EXPIRED_MARKS, retention)
            return total
