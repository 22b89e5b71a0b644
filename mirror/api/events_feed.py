"""``GET /mirror/v1/events?after=&limit=``: the outbox as a feed of CloudEvents, oldest first.

The same events Kafka gets, in the structured JSON form of CloudEvents 1.0
(``mirror.events.envelope``). ``after`` is a cursor: the ``next`` of the
previous answer (0 or absent: from the oldest event kept). Outbox writers take
a transaction lock so ids follow commit order (``mirror.store.outbox``): reading
``id > after`` never skips an event that commits later.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from mirror.api.appkeys import POOL
from mirror.api.jsonbody import json_response
from mirror.api.query_params import single_value
from mirror.errors import InvalidArgument
from mirror.events.envelope import OutboxEvent, to_structured

EVENTS_PATH = "/mirror/v1/events"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_UINT_RE = re.compile(r"[0-9]{1,18}")

# data::text: the stored JSON is embedded as it is, never parsed and re-dumped.
SELECT_EVENTS = """
SELECT id, event_id, topic, key, type, source, time, data::text AS data
FROM outbox
WHERE id > $1
ORDER BY id
LIMIT $2
"""


async def get_events(request: web.Request) -> web.Response:
    after = _cursor(single_value(request, "after"))
    limit = _limit(single_value(request, "limit"))
    async with request.app[POOL].acquire() as conn:
        rows = await conn.fetch(SELECT_EVENTS, after, limit)
    events = [to_structured(OutboxEvent.from_row(row)) for row in rows]
    body: dict[str, Any] = {}
    if events:
        body["events"] = events
    body["next"] = str(rows[-1]["id"] if rows else after)
    return json_response(body)


def _cursor(text: str) -> int:
    if text == "":
        return 0
    if not _UINT_RE.fullmatch(text):
        raise InvalidArgument(
            f"invalid after: {text[:40]!r} is not a cursor (the 'next' of a previous answer)"
        )
    return int(text)


def _limit(text: str) -> int:
    if text == "":
        return DEFAULT_LIMIT
    if not _UINT_RE.fullmatch(text) or not 1 <= int(text) <= MAX_LIMIT:
        raise InvalidArgument(f"invalid limit: must be a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def add_events_routes(app: web.Application) -> None:
    app.router.add_get(EVENTS_PATH, get_events, name="mirror:events")
