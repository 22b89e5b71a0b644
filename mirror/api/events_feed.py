"""``GET /mirror/v1/events``: the outbox as a feed of CloudEvents, oldest first, filtered.

The same events Kafka gets, in the structured JSON form of CloudEvents 1.0
(``mirror.events.envelope``). Query parameters:

* ``type`` (repeatable): an event type, or a prefix ending in ``.*``
  (``registry.tag.*``, ``registry.*``); a value that names no type is a 400;
* ``subject``: the event's subject exactly (image id, digest, ``<repository>:<tag>``);
* ``source``: ``/registry-mirror/ingest`` or ``/registry-mirror/api``;
* ``after``: a cursor (the ``next`` of the previous answer; 0 or absent: from the
  oldest event kept), or ``latest``: from the end (no events, just the cursor);
* ``limit``: 1-1000, default 100.

Outbox writers take a transaction lock so ids follow commit order
(``mirror.store.outbox``): reading ``id > after`` never skips an event that
commits later. The answer and the outbox's last id are read in one snapshot, so
``next`` moves past events the filters skipped: a filtered poll does not scan
them again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web

from mirror.api.appkeys import POOL
from mirror.api.jsonbody import json_response
from mirror.api.query_params import single_value
from mirror.errors import InvalidArgument
from mirror.events.envelope import OutboxEvent, to_structured
from mirror.model import event_types_matching

EVENTS_PATH = "/mirror/v1/events"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_SUBJECT = 512
LATEST = "latest"
_UINT_RE = re.compile(r"[0-9]{1,18}")
INGEST_SOURCE = "/registry-mirror/ingest"
API_SOURCE = "/registry-mirror/api"
KNOWN_SOURCES = (INGEST_SOURCE, API_SOURCE)

# payload: the stored JSON text is embedded as it is, never parsed and re-dumped;
# outbox_events: image.created, blob and tag payloads may be derived (sql/100, 101).
# $2 the types (NULL: all), $3 the source (NULL: any).
_COLUMNS = "id, event_id, topic, key, type, source, time, payload AS data"
_FILTERS = """
  AND ($2::text[] IS NULL OR type = ANY($2::text[]))
  AND ($3::text IS NULL OR source = $3::text)
"""
SELECT_EVENTS = f"""
SELECT {_COLUMNS}
FROM outbox_events
WHERE id > $1 {_FILTERS}
ORDER BY id
LIMIT $4
"""
# One subject: its few events found by outbox_key_hash (sql/096), then sorted by id.
SELECT_EVENTS_OF_SUBJECT = f"""
SELECT {_COLUMNS}
FROM outbox_events
WHERE key = $5 AND id > $1 {_FILTERS}
ORDER BY id
LIMIT $4
"""
SELECT_HEAD = "SELECT coalesce(max(id), 0) FROM outbox"


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What a reader of the feed or the stream asked for (all optional)."""

    types: tuple[str, ...] | None = None
    subject: str | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class FeedPage:
    rows: Sequence[asyncpg.Record]
    next: int


def expand_types(values: Sequence[str]) -> tuple[str, ...] | None:
    """The event types that ``type`` values name (None: no filter); a value naming none
    is INVALID_ARGUMENT."""
    if not values:
        return None
    try:
        return event_types_matching(values)
    except ValueError as exc:
        raise InvalidArgument(f"invalid type: {exc}") from None


def parse_filter(request: web.Request) -> EventFilter:
    """``type``, ``subject`` and ``source`` of the query; bad values are INVALID_ARGUMENT."""
    types = expand_types(request.query.getall("type", []))
    subject = single_value(request, "subject")
    if len(subject) > MAX_SUBJECT:
        raise InvalidArgument(f"invalid subject: longer than {MAX_SUBJECT} characters")
    source = single_value(request, "source")
    if source and source not in KNOWN_SOURCES:
        raise InvalidArgument(
            f"invalid source: {source[:80]!r} (sources: {', '.join(KNOWN_SOURCES)})"
        )
    return EventFilter(types, subject or None, source or None)


def parse_cursor(text: str, name: str = "after") -> int | None:
    """A cursor; None for ``latest``; '' is 0 (the oldest event kept)."""
    if text == "":
        return 0
    if text == LATEST:
        return None
    if not _UINT_RE.fullmatch(text):
        raise InvalidArgument(
            f"invalid {name}: {text[:40]!r} is not a cursor "
            "(the 'next' of a previous answer, or 'latest')"
        )
    return int(text)


def parse_limit(text: str) -> int:
    if text == "":
        return DEFAULT_LIMIT
    if not _UINT_RE.fullmatch(text) or not 1 <= int(text) <= MAX_LIMIT:
        raise InvalidArgument(f"invalid limit: must be a whole number from 1 to {MAX_LIMIT}")
    return int(text)


async def head(conn: asyncpg.Connection) -> int:
    """The last event's cursor (where ``after=latest`` starts)."""
    return int(await conn.fetchval(SELECT_HEAD))


async def read_page(
    conn: asyncpg.Connection, after: int, limit: int, wanted: EventFilter
) -> FeedPage:
    """Up to ``limit`` events after ``after`` that pass ``wanted``, and the next cursor."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        args: list[Any] = [after, list(wanted.types) if wanted.types else None, wanted.source]
        if wanted.subject is None:
            rows = await conn.fetch(SELECT_EVENTS, *args, limit)
        else:
            rows = await conn.fetch(SELECT_EVENTS_OF_SUBJECT, *args, limit, wanted.subject)
        if len(rows) == limit:
            return FeedPage(rows, int(rows[-1]["id"]))
        # Fewer than asked: everything up to the snapshot's last event was looked at.
        return FeedPage(rows, max(after, await head(conn)))


async def get_events(request: web.Request) -> web.Response:
    wanted = parse_filter(request)
    after = parse_cursor(single_value(request, "after"))
    limit = parse_limit(single_value(request, "limit"))
    async with request.app[POOL].acquire() as conn:
        if after is None:
            page = FeedPage((), await head(conn))
        else:
            page = await read_page(conn, after, limit, wanted)
    events = [to_structured(OutboxEvent.from_row(row)) for row in page.rows]
    body: dict[str, Any] = {}
    if events:
        body["events"] = events
    body["next"] = str(page.next)
    return json_response(body)


def add_events_routes(app: web.Application) -> None:
    app.router.add_get(EVENTS_PATH, get_events, name="mirror:events")
