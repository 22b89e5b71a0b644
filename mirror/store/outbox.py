"""Writing change events to the outbox, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import orjson

from mirror.model import Event

# Outbox writers serialise on this transaction-level lock, taken just before
# their inserts: ids are then drawn in commit order, so a reader following
# `id > cursor` (the events feed, the relay) can never miss a row that commits
# later with a smaller id.
OUTBOX_LOCK_KEY = 0x6D69_7272_6F72_0002

LOCK_OUTBOX = "SELECT pg_advisory_xact_lock($1)"
# The payloads go as text[] and become json in the statement: a json[] parameter
# would take the pool's text-format json codec, and asyncpg would send the whole
# array as one quoted, escaped literal for the server to parse back.
INSERT_EVENTS = """
INSERT INTO outbox (topic, key, type, source, data)
SELECT e.topic, e.key, e.type, e.source, e.data::json
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
     AS e (topic, key, type, source, data)
"""
NOTIFY_OUTBOX = "SELECT pg_notify('mirror_outbox', '')"


async def append_events(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
    """Add events to the outbox in the current transaction (and wake the relay on commit)."""
    if not events:
        return
    if not conn.is_in_transaction():
        raise RuntimeError("append_events must run inside the transaction of the change")
    await conn.execute(LOCK_OUTBOX, OUTBOX_LOCK_KEY)
    await conn.execute(
        INSERT_EVENTS,
        [e.topic for e in events],
        [e.subject for e in events],
        [e.type.value for e in events],
        [e.source for e in events],
        [orjson.dumps(e.data).decode() for e in events],
    )
    await conn.execute(NOTIFY_OUTBOX)
