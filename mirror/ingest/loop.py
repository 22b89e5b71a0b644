"""One ingest pass over the configured scopes, and the loop that repeats it.

The importable API of the ingest (``mirror run`` / ``mirror demo`` use it):

- ``await ingest_once(pool, client, scopes)`` walks every scope concurrently and
  returns an ``IngestSummary``;
- ``await run_ingest_loop(pool, client, settings, interval=60, stop=event)``
  repeats passes until ``stop`` is set, finishing the current page transaction;
- ``await upkeep_after(pool, summary, settings)``: the database's upkeep after a
  pass (``mirror.store.maintenance``), which both commands run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from mirror.ingest.deletions import DEFAULT_CONFIRM_MAX, DEFAULT_GUARD
from mirror.ingest.head import run_head_watch
from mirror.ingest.leases import DEFAULT_LEASE_S, new_owner_id
from mirror.ingest.progress import NullProgress, WalkProgress
from mirror.ingest.summary import IngestSummary, ScopeResult, WalkStatus
from mirror.ingest.walker import MERGE_CONNECTIONS, PageSource, WalkOptions, walk_scope
from mirror.model import Scope
from mirror.settings import Settings
from mirror.store.maintenance import after_pass
from mirror.upstream.client import MAX_PAGE_SIZE

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60.0
# What a dead or unreachable database raises through the pool.
DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
# After a pass the database failed, the next waits at least this long, doubling to the cap.
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
# How long the end-of-pass check waits for the database to answer.
PROBE_TIMEOUT_S = 5.0


async def ingest_once(
    pool: asyncpg.Pool,
    client: PageSource,
    scopes: Sequence[Scope],
    *,
    stop: asyncio.Event | None = None,
    owner: str | None = None,
    progress: WalkProgress | None = None,
    page_size: int = MAX_PAGE_SIZE,
    lease_s: float = DEFAULT_LEASE_S,
    delete_guard: float = DEFAULT_GUARD,
    confirm_max: int = DEFAULT_CONFIRM_MAX,
) -> IngestSummary:
    """Walk every scope once, concurrently; one scope failing does not stop the others.

    ``delete_guard`` and ``confirm_max`` are ``MIRROR_DELETE_GUARD`` and
    ``MIRROR_DELETE_CONFIRM_MAX`` (see ``mirror.ingest.deletions``)."""
    options = WalkOptions(
        owner=owner or new_owner_id(),
        page_size=page_size,
        lease_s=lease_s,
        stop=stop or asyncio.Event(),
        progress=progress or NullProgress(),
        delete_guard=delete_guard,
        confirm_max=confirm_max,
        merge_connections=merge_connections(pool, len(dict.fromkeys(scopes))),
    )
    started = time.monotonic()
    results = await asyncio.gather(
        *(_walk(pool, client, scope, options) for scope in dict.fromkeys(scopes))
    )
    seconds = time.monotonic() - started
    down = (
        await database_down(pool) if any(r.status is WalkStatus.FAILED for r in results) else None
    )
    return IngestSummary.of(results, seconds, down)


# Connections of the pool a pass leaves to others: the stats folder, the relay, the API.
POOL_RESERVE = 4


def merge_connections(pool: asyncpg.Pool, walks: int) -> int:
    """How many page merges each walk may have in flight on connections of its own
    (``mirror.ingest.walker.MERGE_CONNECTIONS`` at most): as many as the pool holds for
    every walk beside the walks' own connections and ``POOL_RESERVE``."""
    room = pool.get_max_size() - walks - POOL_RESERVE
    return max(0, min(MERGE_CONNECTIONS, room // max(1, walks)))


async def _walk(
    pool: asyncpg.Pool, client: PageSource, scope: Scope, options: WalkOptions
) -> ScopeResult:
    """``walk_scope``, with the database failures it lets through (no connection to
    start with, or none left to record the outcome on) made the scope's ``failed``."""
    try:
        return await walk_scope(pool, client, scope, options)
    except DATABASE_ERRORS as exc:
        lost = not isinstance(exc, asyncpg.PostgresError) or isinstance(
            exc, asyncpg.PostgresConnectionError
        )
        error = f"database {'unavailable' if lost else 'error'}: {str(exc) or type(exc).__name__}"
        log.warning("%s: %s", scope, error)
        return ScopeResult(str(scope), WalkStatus.FAILED, errors=1, error=error)


async def upkeep_after(pool: asyncpg.Pool, summary: IngestSummary, settings: Settings) -> None:
    """The database's upkeep after a pass: the indexes a first mirror filled built again, the
    embedded server's WAL released (``mirror.store.maintenance``; never raises)."""
    await after_pass(
        pool,
        created=summary.created,
        listed=summary.images,
        changed=summary.created + summary.updated + summary.deleted,
        embedded=settings.embedded_database,
    )


async def database_down(pool: asyncpg.Pool) -> str | None:
    """Why the database does not answer now, or None when it does."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await pool.fetchval("SELECT 1")
    except DATABASE_ERRORS as exc:
        return str(exc) or type(exc).__name__
    return None


async def run_ingest_loop(
    pool: asyncpg.Pool,
    client: PageSource,
    settings: Settings,
    *,
    interval: float = DEFAULT_INTERVAL_S,
    stop: asyncio.Event,
    scopes: Sequence[Scope] | None = None,
    progress: WalkProgress | None = None,
    on_pass: Callable[[IngestSummary], Awaitable[None] | None] | None = None,
) -> None:
    """Ingest passes every ``interval`` seconds (counted from each pass's start) until ``stop``.

    ``scopes`` defaults to ``settings.scopes``. ``on_pass`` sees each pass's summary.
    Meanwhile the head-watch (``mirror.ingest.head``) records new images every
    ``settings.head_interval`` seconds; it ends with ``stop``.
    """
    scopes = tuple(scopes if scopes is not None else settings.scopes)
    owner = new_owner_id()
    backoff = 0.0
    head = asyncio.create_task(run_head_watch(pool, client, scopes, settings.head_interval, stop))
    while not stop.is_set():
        started = time.monotonic()
        summary: IngestSummary | None = None
        try:
            summary = await ingest_once(
                pool,
                client,
                scopes,
                stop=stop,
                owner=owner,
                progress=progress,
                delete_guard=settings.delete_guard,
                confirm_max=settings.delete_confirm_max,
            )
            down = summary.database_error
        except DATABASE_ERRORS as exc:
            down = str(exc) or type(exc).__name__
        if down is None:
            backoff = 0.0
        else:  # the database went away: keep trying, less and less often
            backoff = min(BACKOFF_MAX_S, max(BACKOFF_FIRST_S, backoff * 2))
            log.warning(
                "ingest pass: the database is unavailable (%s); next try in %.0fs or later",
                down,
                backoff,
            )
        if summary is not None:
            log.info(
                "ingest pass: %d image(s), %d created, %d updated, %d deleted, %d error(s) in %.1fs",
                summary.images,
                summary.created,
                summary.updated,
                summary.deleted,
                summary.errors,
                summary.seconds,
            )
            if on_pass is not None:
                maybe = on_pass(summary)
                if maybe is not None:
                    await maybe
        delay = max(backoff, interval - (time.monotonic() - started))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
    await head
