"""One ingest pass over the configured scopes, and the loop that repeats it.

The importable API of the ingest (``mirror run`` / ``mirror demo`` use it):

- ``await ingest_once(pool, client, scopes)`` walks every scope concurrently and
  returns an ``IngestSummary``;
- ``await run_ingest_loop(pool, client, settings, interval=60, stop=event)``
  repeats passes until ``stop`` is set, finishing the current page transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from mirror.ingest.head import run_head_watch
from mirror.ingest.leases import DEFAULT_LEASE_S, new_owner_id
from mirror.ingest.progress import NullProgress, WalkProgress
from mirror.ingest.summary import IngestSummary
from mirror.ingest.walker import PageSource, WalkOptions, walk_scope
from mirror.model import Scope
from mirror.settings import Settings
from mirror.upstream.client import MAX_PAGE_SIZE

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60.0


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
) -> IngestSummary:
    """Walk every scope once, concurrently; one scope failing does not stop the others."""
    options = WalkOptions(
        owner=owner or new_owner_id(),
        page_size=page_size,
        lease_s=lease_s,
        stop=stop or asyncio.Event(),
        progress=progress or NullProgress(),
    )
    started = time.monotonic()
    results = await asyncio.gather(
        *(walk_scope(pool, client, scope, options) for scope in dict.fromkeys(scopes))
    )
    return IngestSummary.of(results, time.monotonic() - started)


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
    head = asyncio.create_task(run_head_watch(pool, client, scopes, settings.head_interval, stop))
    while not stop.is_set():
        started = time.monotonic()
        try:
            summary = await ingest_once(
                pool, client, scopes, stop=stop, owner=owner, progress=progress
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # The database went away between walks: try again next interval.
            log.warning("ingest pass failed: %s", exc)
        else:
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
        delay = max(0.0, interval - (time.monotonic() - started))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
    await head
