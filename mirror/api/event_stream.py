"""``GET /mirror/v1/events/stream``: the event feed as Server-Sent Events.

The filters of ``/mirror/v1/events`` (``type``, ``subject``, ``source``, ``after``)
apply; each event is one SSE message whose ``id:`` is its cursor and whose
``data:`` is the structured CloudEvent (one JSON line). A client that reconnects
with ``Last-Event-ID`` (browsers' ``EventSource`` do it by themselves) resumes
right after the last event it received: no gap, no repeat. ``after=latest``
starts at the end. A comment line (``: heartbeat``) goes out when nothing was
sent for ``HEARTBEAT_S`` seconds, so proxies keep the connection and clients
notice a dead one.

New events are noticed through ``LISTEN mirror_outbox`` (every outbox writer
notifies on commit): one connection of the pool listens while at least one
stream is open, and every stream also polls each ``POLL_S`` in case a
notification is missed. Streams end when the server shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from mirror.api.appkeys import POOL
from mirror.api.events_feed import (
    EVENTS_PATH,
    MAX_LIMIT,
    EventFilter,
    parse_cursor,
    parse_filter,
    read_page,
)
from mirror.api.events_feed import head as outbox_head
from mirror.api.query_params import single_value
from mirror.events.envelope import OutboxEvent, to_structured

log = logging.getLogger(__name__)

STREAM_PATH = f"{EVENTS_PATH}/stream"
CHANNEL = "mirror_outbox"


@dataclass(frozen=True, slots=True)
class StreamOptions:
    heartbeat_s: float = 15.0
    poll_s: float = 1.0
    retry_ms: int = 1000  # the reconnection delay suggested to EventSource clients


STREAM_OPTIONS = web.AppKey("event_stream_options", StreamOptions)
SIGNAL: web.AppKey[OutboxSignal] = web.AppKey("event_stream_signal")


class OutboxSignal:
    """Wakes the open streams when the outbox gets events (one LISTEN for all of them)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._event = asyncio.Event()
        self._streams = 0
        self._listener: asyncio.Task[None] | None = None
        self.closing = asyncio.Event()

    def _notify(self, *_: Any) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def _listen(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                await conn.add_listener(CHANNEL, self._notify)
                try:
                    await asyncio.Event().wait()  # until cancelled
                finally:
                    await conn.remove_listener(CHANNEL, self._notify)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("event stream: cannot LISTEN %s (polling instead): %s", CHANNEL, exc)

    @contextlib.asynccontextmanager
    async def attached(self) -> AsyncIterator[None]:
        """Hold the shared listener open while the caller streams."""
        self._streams += 1
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen())
        try:
            yield
        finally:
            self._streams -= 1
            if self._streams == 0 and self._listener is not None:
                self._listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._listener
                self._listener = None

    async def wait(self, seconds: float) -> None:
        """Until new events may be there, the server closes, or ``seconds`` pass."""
        waiters = {
            asyncio.ensure_future(self._event.wait()),
            asyncio.ensure_future(self.closing.wait()),
        }
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


def sse_message(cursor: int, event: dict[str, Any]) -> bytes:
    """One SSE message: ``id:`` the cursor, ``data:`` the CloudEvent as one JSON line."""
    return b"id: %d\ndata: %s\n\n" % (cursor, orjson.dumps(event))


def _start_cursor(request: web.Request) -> int | None:
    resume = request.headers.get("Last-Event-ID", "").strip()
    if resume:
        return parse_cursor(resume, "Last-Event-ID")
    return parse_cursor(single_value(request, "after"))


async def stream_events(request: web.Request) -> web.StreamResponse:
    wanted = parse_filter(request)
    after = _start_cursor(request)
    pool = request.app[POOL]
    options = request.app.get(STREAM_OPTIONS) or StreamOptions()
    signal = request.app[SIGNAL]
    if after is None:
        async with pool.acquire() as conn:
            after = await outbox_head(conn)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        }
    )
    await response.prepare(request)
    if request.method == "HEAD":  # the head alone: a body would corrupt a kept-alive connection
        return response
    with contextlib.suppress(ConnectionResetError):  # the client went away
        await response.write(b"retry: %d\n\n" % options.retry_ms)
        await _follow(response, pool, signal, options, after, wanted)
    return response


async def _follow(
    response: web.StreamResponse,
    pool: asyncpg.Pool,
    signal: OutboxSignal,
    options: StreamOptions,
    after: int,
    wanted: EventFilter,
) -> None:
    loop = asyncio.get_running_loop()
    last_write = loop.time()
    async with signal.attached():
        while not signal.closing.is_set():
            async with pool.acquire() as conn:
                page = await read_page(conn, after, MAX_LIMIT, wanted)
            for row in page.rows:
                event = to_structured(OutboxEvent.from_row(row))
                await response.write(sse_message(int(row["id"]), event))
            if page.rows:
                last_write = loop.time()
            after = page.next
            if len(page.rows) == MAX_LIMIT:
                continue  # more are waiting
            idle = loop.time() - last_write
            if idle >= options.heartbeat_s:
                await response.write(b": heartbeat\n\n")
                last_write = loop.time()
                idle = 0.0
            await signal.wait(min(options.poll_s, options.heartbeat_s - idle))


def add_stream_routes(app: web.Application) -> None:
    """The route, and the shared listener (created with the app, woken on shutdown)."""

    async def signal_context(app: web.Application) -> AsyncIterator[None]:
        app[SIGNAL] = OutboxSignal(app[POOL])
        yield

    async def close_streams(app: web.Application) -> None:
        if SIGNAL in app:
            app[SIGNAL].closing.set()

    app.cleanup_ctx.append(signal_context)
    app.on_shutdown.append(close_streams)
    app.router.add_get(STREAM_PATH, stream_events, name="mirror:events-stream")
