"""Walking one scope: page after page into the index, then deletion detection.

``walk_scope`` takes the scope's lease, streams the List pages (the next page
is fetched while the current one is merged; at most ``PREFETCH`` pages wait in
memory, whatever the registry's size), compares each page with the index on
the walk's connection and merges what changed in its own transaction (up to
``MERGE_CONNECTIONS`` of them in flight, each on a connection of its own, while
the walk compares the next pages: ``_Merges``), and only when the walk saw the
last page and every merge has ended does it look for deletions. A failure or a
stop anywhere before that deletes nothing; so does a *suspect* walk (one that
listed far fewer images than the index holds for the scope, or ended on an empty
page: see ``mirror.ingest.deletions``), which is reported as failed with its
reason.

Every page was checked against the cloud's message shapes by the client before
it gets here (a malformed page stops the walk). An image listed twice, on one
page or on two pages of the walk, is counted once and reported as an anomaly.

A stop request (SIGTERM) is honoured between pages: the page merges that started
finish and commit, then the walk ends as ``cancelled``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg

from mirror.errors import LeaseLost, MalformedImage, UpstreamError
from mirror.ingest import metrics
from mirror.ingest.changes import SOURCE, MergeResult, run_origin
from mirror.ingest.deletions import (
    DEFAULT_CONFIRM_MAX,
    DEFAULT_GUARD,
    DeletionOutcome,
    WalkFacts,
    confirm_and_delete,
    holds_images,
    walk_seen_counts,
)
from mirror.ingest.leases import (
    DEFAULT_LEASE_S,
    RunOutcome,
    ScopeLease,
    expected_images,
)
from mirror.ingest.memo import PageMemo
from mirror.ingest.merge import PageWriter
from mirror.ingest.progress import NullProgress, WalkProgress
from mirror.ingest.staging import PageImage, page_images
from mirror.ingest.summary import ScopeResult, WalkStatus
from mirror.ingest.tags import settle_released
from mirror.model import Scope, ScopeKind
from mirror.upstream.client import MAX_PAGE_SIZE, KnownPage, Page, RememberedNext, parse_page

log = logging.getLogger(__name__)

PREFETCH = 2
# Page merges a walk may have in flight, each on a connection of its own, while the
# walk compares the next page on its own connection: the merges' statements run in
# PostgreSQL while the ingest process prepares the next page, instead of one waiting
# for the other (bench/RESULTS.md, "## Ingest", 2026-12-03, "A walk alone").
# ``ingest_once`` gives each walk as many as the pool has room for.
MERGE_CONNECTIONS = 2
# How long a walk waits for a merge connection before it merges on its own.
MERGE_ACQUIRE_S = 1.0

# What the deletion guard decided (migration 050), beside the run's other figures.
SET_RUN_GUARD = "UPDATE sync_runs SET suspect = $2, unchecked = $3 WHERE id = $1"


class PageSource(Protocol):
    """What the walker needs from the upstream (``UpstreamClient`` is one)."""

    def iter_pages(
        self,
        scope: Scope,
        page_size: int = ...,
        *,
        known: KnownPage | None = ...,
        remembered: RememberedNext | None = ...,
    ) -> AsyncGenerator[Page, None]: ...

    async def get_image(self, image_id: str) -> dict[str, Any] | None: ...


@dataclass(slots=True)
class WalkOptions:
    owner: str
    page_size: int = MAX_PAGE_SIZE
    lease_s: float = DEFAULT_LEASE_S
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    progress: WalkProgress = field(default_factory=NullProgress)
    delete_guard: float = DEFAULT_GUARD
    confirm_max: int = DEFAULT_CONFIRM_MAX
    merge_connections: int = 0  # a walk's page merges in flight beside it (``_Merges``)


@dataclass(slots=True)
class _Counts:
    pages: int = 0
    images: int = 0  # distinct within each page; made distinct over the walk at its end
    duplicates: int = 0  # images listed more than once in the walk
    last_empty: bool = False  # the last page listed no image
    # the largest image id listed so far, and whether a page listed an id not above it:
    # only then can an image have been listed on two pages (the default List order is
    # by id, so a walk without it needs no duplicate count at its end)
    max_id: str = ""
    out_of_order: bool = False
    merged: MergeResult = field(default_factory=MergeResult)


class _Stopped(Exception):
    pass


# A page as the walk merges it: parsed pages come with their images keyed and
# hashed (done by the prefetching task, while the previous page is being merged);
# pages the memo recognised come unparsed, with None.
_Fetched = tuple[Page, list[PageImage] | None]


async def _prefetch(
    pages: AsyncGenerator[Page, None], queue: asyncio.Queue[_Fetched | BaseException | None]
) -> None:
    # Closed on the way out, so a walk that stops early has the client cancel the
    # pages it asked for ahead (UpstreamClient.iter_pages) at once.
    async with contextlib.aclosing(pages):
        try:
            async for page in pages:
                await queue.put((page, None if page.known else page_images(page.images)))
            await queue.put(None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, which raises it
            await queue.put(exc)


async def _next_page(
    queue: asyncio.Queue[_Fetched | BaseException | None], stop: asyncio.Event
) -> _Fetched | None:
    """The next page, None after the last; raises _Stopped when a stop comes first."""
    if stop.is_set():
        raise _Stopped
    getter = asyncio.ensure_future(queue.get())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if not getter.done():
        getter.cancel()
        raise _Stopped
    item = getter.result()
    if isinstance(item, BaseException):
        raise item
    return item


async def walk_scope(
    pool: asyncpg.Pool, client: PageSource, scope: Scope, options: WalkOptions
) -> ScopeResult:
    """Walk one scope into the index; never raises for an upstream or database failure
    (the result says ``failed``), so that other scopes' walks carry on."""
    name = str(scope)
    started = time.monotonic()
    async with pool.acquire() as conn:
        lease = await ScopeLease.take(conn, scope, options.owner, lease_s=options.lease_s)
        if lease is None:
            log.info("%s: another ingest process holds the lease; skipped", name)
            metrics.WALKS.labels(name, WalkStatus.SKIPPED.value).inc()
            return ScopeResult(name, WalkStatus.SKIPPED)
        options.progress.start(name, await expected_images(conn, scope))
        counts = _Counts()
        deletions = DeletionOutcome()
        status = WalkStatus.COMPLETE
        error: str | None = None
        writer = PageWriter(
            conn,
            folder_id=scope.id if scope.kind is ScopeKind.FOLDER else None,
            origin=run_origin(lease.run_id),
        )
        memo = PageMemo(f"{name}?pageSize={options.page_size}")
        try:
            await writer.prepare()
            await memo.load(conn)
            held = await holds_images(conn, scope)
            await _walk_pages(pool, client, scope, writer, memo, lease, options, counts)
            await memo.prune(conn)
            total = distinct = counts.images
            if counts.out_of_order:
                total, distinct = await walk_seen_counts(conn)
            if total > distinct:
                counts.duplicates += total - distinct
                log.warning(
                    "%s: %d image(s) listed on more than one page of the walk (counted once)",
                    name,
                    total - distinct,
                )
            counts.images = distinct
            if not held:
                log.debug("%s: the scope held no image before this walk: nothing to sweep", name)
            else:
                deletions = await confirm_and_delete(
                    conn,
                    scope,
                    client.get_image,
                    facts=WalkFacts(listed=distinct, ended_empty=counts.last_empty),
                    guard=options.delete_guard,
                    confirm_max=options.confirm_max,
                    keep_lease=lease.keep,
                    stop=options.stop,
                    origin=run_origin(lease.run_id),
                )
            if deletions.suspect is None:
                # Every page seen: tags let go and claimed by no image are removed. Not
                # after a suspect walk: the image that took a tag over may be one it lost
                # (the releases wait, released, for the next walk that is not suspect).
                await settle_released(conn, scope, SOURCE, run_origin(lease.run_id))
            if deletions.suspect is not None:
                status = WalkStatus.FAILED
                error = f"suspect walk, nothing deleted: {deletions.suspect}"
            elif deletions.errors:
                status = WalkStatus.FAILED
                error = (
                    f"{deletions.errors} deletion check(s) got no well-formed answer upstream;"
                    f" those images stay and are checked again next pass"
                    f" (first: {deletions.first_error})"
                )
            elif options.stop.is_set():
                status = WalkStatus.CANCELLED
        except _Stopped:
            status = WalkStatus.CANCELLED
        except (
            UpstreamError,
            LeaseLost,
            MalformedImage,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,  # the connection closed under the walk (the server died)
            OSError,
        ) as exc:
            status = WalkStatus.FAILED
            error = str(exc) or type(exc).__name__
            log.warning("%s: walk failed after %d page(s): %s", name, counts.pages, error)
        except Exception as exc:
            # A bug must not stop the other scopes' walks; it is logged with its traceback.
            status = WalkStatus.FAILED
            error = f"internal error: {type(exc).__name__}"
            log.exception("%s: walk failed after %d page(s)", name, counts.pages)
        seconds = time.monotonic() - started
        result = ScopeResult(
            scope=name,
            status=status,
            pages=counts.pages,
            images=counts.images,
            created=counts.merged.created,
            updated=counts.merged.updated,
            deleted=deletions.deleted,
            anomalies=deletions.anomalies + counts.duplicates,
            errors=deletions.errors or (1 if status is WalkStatus.FAILED else 0),
            seconds=seconds,
            error=error,
            suspect=deletions.suspect,
            unchecked=deletions.unchecked,
        )
        await _record(conn, writer, lease, result)
    options.progress.finish(name, status.value)
    log.info(
        "%s: %s — %d page(s), %d image(s), %d created, %d updated, %d deleted, %d anomalies in %.1fs",
        name,
        status.value,
        result.pages,
        result.images,
        result.created,
        result.updated,
        result.deleted,
        result.anomalies,
        seconds,
    )
    return result


async def _walk_pages(
    pool: asyncpg.Pool,
    client: PageSource,
    scope: Scope,
    writer: PageWriter,
    memo: PageMemo,
    lease: ScopeLease,
    options: WalkOptions,
    counts: _Counts,
) -> None:
    name = str(scope)
    queue: asyncio.Queue[_Fetched | BaseException | None] = asyncio.Queue(maxsize=PREFETCH)
    pages = client.iter_pages(
        scope, options.page_size, known=memo.next_token, remembered=memo.remembered_next
    )
    producer = asyncio.create_task(_prefetch(pages, queue))
    async with contextlib.AsyncExitStack() as stack:
        merges = _Merges(writer, memo, counts, _Connections(pool, stack, options.merge_connections))
        try:
            while (fetched := await _next_page(queue, options.stop)) is not None:
                page, items = fetched
                images, listed, (first_id, last_id) = await _compare_page(
                    writer, memo, merges, page, items
                )
                if images:
                    counts.out_of_order |= first_id <= counts.max_id
                    counts.max_id = max(counts.max_id, last_id)
                if listed > images:
                    counts.duplicates += listed - images
                    log.warning(
                        "%s: a page listed %d image(s) twice (counted once; request id %s)",
                        name,
                        listed - images,
                        page.request_id,
                    )
                counts.pages += 1
                counts.last_empty = listed == 0
                counts.images += images
                metrics.PAGES.labels(name).inc()
                metrics.IMAGES.labels(name).inc(images)
                options.progress.advance(name, images)
                await merges.reap()
                await lease.keep()
            await merges.drain()
        except asyncio.CancelledError:
            await merges.cancel()
            raise
        except _Stopped:
            await merges.drain()  # what started finishes and commits; a failure is the walk's
            raise
        except BaseException:
            await merges.drain(quiet=True)  # the walk's own failure is what it reports
            raise
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer


@dataclass(slots=True)
class _Connections:
    """Where a walk's merge connections come from, and how many it may take."""

    pool: asyncpg.Pool
    stack: contextlib.AsyncExitStack  # releases them when the walk's pages are done
    wanted: int


class _Merges:
    """A walk's page merges: in flight on merge connections of their own while the walk
    goes on, or, without any, on the walk's connection before it goes on. The
    connections are taken when the first page with a change comes (an unchanged
    re-sync takes none), each if the pool has one within ``MERGE_ACQUIRE_S``.

    Each merge records its page in the memo after it commits, on its own connection,
    and adds what it changed to the walk's counts when it is reaped: the counts are
    sums, so the order merges end in does not matter. Pages of one walk hold distinct
    images (an image listed twice waits on the other merge's row lock, then finds
    nothing to change), and concurrent merges take row locks in key order as two
    ingest processes do.
    """

    def __init__(
        self, writer: PageWriter, memo: PageMemo, counts: _Counts, connections: _Connections
    ) -> None:
        self.writer = writer
        self.memo = memo
        self.counts = counts
        self.connections: _Connections | None = connections
        self.free: list[PageWriter] = []
        self.inflight: collections.deque[tuple[asyncio.Task[MergeResult], PageWriter]] = (
            collections.deque()
        )

    async def _take_connections(self, source: _Connections) -> None:
        for _ in range(source.wanted):
            try:
                conn = await source.stack.enter_async_context(
                    source.pool.acquire(timeout=MERGE_ACQUIRE_S)
                )
            except TimeoutError:
                return
            merger = PageWriter(conn, folder_id=self.writer.folder_id, origin=self.writer.origin)
            source.stack.push_async_callback(_close_quietly, merger)
            await merger.prepare()
            self.free.append(merger)

    async def start(self, page: Page, changed: list[PageImage], items: list[PageImage]) -> None:
        """Merge ``changed`` (and remember the page) on a merge connection, waiting for the
        oldest merge when all are busy; on the walk's connection when there are none."""
        if self.connections is not None:
            source, self.connections = self.connections, None
            await self._take_connections(source)
        if not self.free and not self.inflight:
            self._count(await self._merge(self.writer, page, changed, items))
            return
        if not self.free:
            await self._finish()
        merger = self.free.pop()
        task = asyncio.create_task(self._merge(merger, page, changed, items))
        self.inflight.append((task, merger))

    async def _merge(
        self, merger: PageWriter, page: Page, changed: list[PageImage], items: list[PageImage]
    ) -> MergeResult:
        merged = await merger.merge(changed)
        await self.memo.record(merger.conn, page.page_token, page.body, page.next_page_token, items)
        return merged

    async def reap(self) -> None:
        """Count the merges that have ended (raising the first one's failure)."""
        while self.inflight and self.inflight[0][0].done():
            await self._finish()

    async def drain(self, *, quiet: bool = False) -> None:
        """Wait for every merge in flight; the first failure is raised unless ``quiet``."""
        first: BaseException | None = None
        while self.inflight:
            try:
                await self._finish()
            except Exception as exc:
                first = first or exc
        if first is not None and not quiet:
            raise first

    async def cancel(self) -> None:
        for task, _ in self.inflight:
            task.cancel()
        await asyncio.gather(*(t for t, _ in self.inflight), return_exceptions=True)
        self.inflight.clear()

    async def _finish(self) -> None:
        """Wait for the oldest merge and count it (raising its failure). A walk cancelled
        meanwhile leaves it in flight, for ``cancel``."""
        task, merger = self.inflight[0]
        await asyncio.wait([task])
        self.inflight.popleft()
        self.free.append(merger)
        self._count(task.result())

    def _count(self, merged: MergeResult) -> None:
        self.counts.merged.add(merged)
        _count_changes(merged)


async def _close_quietly(writer: PageWriter) -> None:
    """Drop a merge connection's walk table before it goes back to the pool; a database
    that went away meanwhile is the walk's failure to report, not this."""
    with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        await writer.close()


async def _compare_page(
    writer: PageWriter,
    memo: PageMemo,
    merges: _Merges,
    page: Page,
    items: list[PageImage] | None,
) -> tuple[int, int, tuple[str, str]]:
    """Record one page as seen, and start the merge of what it changed (``merges``);
    returns how many distinct images the page listed, how many it listed in all (more
    when an image appears twice), and its smallest and largest image id."""
    if items is None:  # the memo recognised the body
        hit = await memo.check(writer.conn, page.page_token, page.body, writer.folder_id)
        if hit is not None:
            await writer.remember_registries(hit.registries)
            return hit.images, hit.images, (hit.first_id, hit.last_id)
        page = parse_page(page.body, page.page_token, page.request_id)
        items = page_images(page.images)
    changed = await writer.compare(items)
    if changed:
        await merges.start(page, changed, items)
    else:
        await memo.record(writer.conn, page.page_token, page.body, page.next_page_token, items)
    span = (items[0].id, items[-1].id) if items else ("", "")  # items are sorted by id
    return len(items), len(page.images), span


def _count_changes(merged: MergeResult) -> None:
    for kind, n in (
        ("created", merged.created),
        ("updated", merged.updated),
        ("deleted", merged.deleted),
        ("blob_added", merged.blobs_added),
        ("blob_orphaned", merged.blobs_orphaned),
    ):
        if n:
            metrics.CHANGES.labels(kind).inc(n)


async def _record(
    conn: asyncpg.Connection, writer: PageWriter, lease: ScopeLease, result: ScopeResult
) -> None:
    """Write the run's outcome and release the lease; failures here are logged, not raised."""
    name = result.scope
    metrics.WALKS.labels(name, result.status.value).inc()
    if result.errors:
        metrics.ERRORS.labels(name).inc(result.errors)
    if result.anomalies:
        metrics.ANOMALIES.labels(name).inc(result.anomalies)
    if result.deleted:
        metrics.CHANGES.labels("deleted").inc(result.deleted)
    if result.status is WalkStatus.COMPLETE:
        metrics.walk_completed(name, result.seconds)
    run_guard = (result.suspect, result.unchecked)
    outcome = RunOutcome(
        status=result.status.value,
        pages=result.pages,
        images=result.images,
        created=result.created,
        updated=result.updated,
        deleted=result.deleted,
        anomalies=result.anomalies,
        seconds=result.seconds,
        error=result.error,
    )
    try:
        await writer.close()
        if run_guard != (None, 0):
            await conn.execute(SET_RUN_GUARD, lease.run_id, *run_guard)
        await lease.finish(outcome)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        # The lock goes with the session (or back to the pool, whose reset frees it);
        # the next walker marks this run failed.
        log.warning("%s: could not record the walk's outcome: %s", name, exc)
