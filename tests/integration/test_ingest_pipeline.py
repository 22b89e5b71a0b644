"""A walk's page merges in flight on connections of their own (mirror/ingest/walker.py,
``_Merges``): the same index, events and counts as merging one page after the other;
a stop lets the merges that started commit; a merge that fails fails the walk.

Each test proves that two merges were in flight at once with a barrier: the first
merge waits until the second has started (a walk that merged one page after the
other would never start the second, and the barrier's timeout fails the test).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import pytest

from mirror.ingest.loop import POOL_RESERVE, ingest_once, merge_connections
from mirror.ingest.merge import MergeResult, PageWriter
from mirror.ingest.staging import PageImage
from mirror.ingest.summary import WalkStatus
from mirror.ingest.walker import MERGE_CONNECTIONS, PREFETCH
from mirror.model import Scope
from mirror.store.pool import create_pool
from mirror.upstream.client import UpstreamClient
from tests.integration.ingest_fake_upstream import FakeUpstream, fast_client, make_image, serving
from tests.integration.refcounts import ref_count_mismatches
from tests.integration.test_ingest import REG1, CountingProgress, CountingSource

FOLDER = Scope.parse("folder:f1")
IMAGES = 120
PAGE_SIZE = 10
BARRIER_S = 20.0

Merge = Callable[[PageWriter, Sequence[PageImage]], Awaitable[MergeResult]]


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with serving(FakeUpstream()) as upstream:
        for i in range(IMAGES):
            upstream.put(make_image(i, registry=("reg1", "reg2")[i % 2]))
        yield upstream


@pytest.fixture
async def client(fake: FakeUpstream) -> AsyncIterator[UpstreamClient]:
    async with fast_client(fake.url) as upstream_client:
        yield upstream_client


@pytest.fixture
async def big_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool with room for a walk's merge connections (the tests' usual one has 5)."""
    pool = await create_pool(database_url, max_size=1 + POOL_RESERVE + MERGE_CONNECTIONS)
    try:
        yield pool
    finally:
        await pool.close()


class Overlap:
    """``PageWriter.merge`` wrapped: the first merge waits for the second to start, and
    the most merges in flight at once are counted; ``on_second`` runs as the second
    starts (before it merges)."""

    def __init__(self, on_second: Callable[[], Awaitable[None]] | None = None) -> None:
        self.merge: Merge = PageWriter.merge
        self.on_second = on_second
        self.started = 0
        self.running = 0
        self.most = 0
        self.second = asyncio.Event()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        async def merge(writer: PageWriter, changed: Sequence[PageImage]) -> MergeResult:
            return await self(writer, changed)

        monkeypatch.setattr(PageWriter, "merge", merge)

    async def __call__(self, writer: PageWriter, changed: Sequence[PageImage]) -> MergeResult:
        self.started += 1
        number = self.started
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if number == 2:
                self.second.set()
                if self.on_second is not None:
                    await self.on_second()
            if number == 1:
                await asyncio.wait_for(self.second.wait(), BARRIER_S)
            return await self.merge(writer, changed)
        finally:
            self.running -= 1


async def state(conn: asyncpg.Connection) -> dict[str, Any]:
    created = await conn.fetch(
        "SELECT key FROM outbox_events WHERE type = 'registry.image.created' ORDER BY key"
    )
    return {
        "images": sorted(await conn.fetch("SELECT id FROM images ORDER BY id")),
        "created": created,
        "blobs added": await conn.fetchval(
            "SELECT count(*) FROM outbox_events WHERE type = 'registry.blob.added'"
        ),
        "blobs": await conn.fetchval("SELECT count(*) FROM blobs"),
        "pages remembered": await conn.fetchval("SELECT count(*) FROM ingest_page_memo"),
    }


def test_each_walk_gets_merge_connections_only_where_the_pool_has_room() -> None:
    class Pool:
        def __init__(self, size: int) -> None:
            self.size = size

        def get_max_size(self) -> int:
            return self.size

    def per_walk(size: int, walks: int) -> int:
        return merge_connections(Pool(size), walks)  # type: ignore[arg-type]

    room = POOL_RESERVE + 1 + MERGE_CONNECTIONS
    assert per_walk(room, 1) == MERGE_CONNECTIONS
    assert per_walk(room - 1, 1) == MERGE_CONNECTIONS - 1
    assert per_walk(5, 1) == 0  # the tests' usual pool: one page after the other
    assert [per_walk(10, w) for w in (1, 2, 3, 4, 6)] == [2, 2, 1, 0, 0]  # mirror ingest's
    assert per_walk(16, 2) == 2  # mirror run's, shared with the API and the relay


async def test_merges_in_flight_give_what_one_after_the_other_gives(
    big_pool: asyncpg.Pool,
    fake: FakeUpstream,
    client: UpstreamClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    overlap = Overlap()
    overlap.install(monkeypatch)
    summary = await ingest_once(big_pool, client, [FOLDER], page_size=PAGE_SIZE)
    assert overlap.most == MERGE_CONNECTIONS and overlap.started == IMAGES // PAGE_SIZE
    assert summary.scopes[0].status is WalkStatus.COMPLETE
    assert (summary.created, summary.images, summary.pages) == (IMAGES, IMAGES, 12)
    digests = {b["digest"] for i in fake.images.values() for b in [i["config"], *i["layers"]]}
    async with big_pool.acquire() as conn:
        got = await state(conn)
        assert [r["id"] for r in got["images"]] == sorted(fake.images)
        assert [r["key"] for r in got["created"]] == sorted(fake.images)  # each once
        assert got["blobs added"] == got["blobs"] == len(digests)
        assert got["pages remembered"] == 12
        assert await ref_count_mismatches(conn) == 0

    # the next pass finds nothing to merge: every page was remembered after its commit
    monkeypatch.undo()
    again = await ingest_once(big_pool, client, [FOLDER], page_size=PAGE_SIZE)
    assert (again.created, again.updated, again.deleted, again.images) == (0, 0, 0, IMAGES)
    async with big_pool.acquire() as conn:
        assert await state(conn) == got


async def test_a_stop_lets_the_merges_in_flight_commit(
    big_pool: asyncpg.Pool, client: UpstreamClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = asyncio.Event()

    async def stop_now() -> None:
        stop.set()

    overlap = Overlap(on_second=stop_now)
    overlap.install(monkeypatch)
    summary = await ingest_once(big_pool, client, [FOLDER], page_size=PAGE_SIZE, stop=stop)
    assert overlap.most == MERGE_CONNECTIONS
    walk = summary.scopes[0]
    assert walk.status is WalkStatus.CANCELLED
    # every merge that started committed, with its events and its page remembered
    assert 2 * PAGE_SIZE <= walk.created == overlap.started * PAGE_SIZE < IMAGES
    async with big_pool.acquire() as conn:
        got = await state(conn)
        assert len(got["images"]) == len(got["created"]) == walk.created
        assert got["pages remembered"] == overlap.started
        assert await ref_count_mismatches(conn) == 0


async def test_a_merge_that_fails_fails_the_walk_and_the_others_commit(
    big_pool: asyncpg.Pool, client: UpstreamClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fail() -> None:
        raise asyncpg.PostgresError("injected: the second merge fails")

    overlap = Overlap(on_second=fail)
    overlap.install(monkeypatch)
    summary = await ingest_once(big_pool, client, [FOLDER], page_size=PAGE_SIZE)
    walk = summary.scopes[0]
    assert walk.status is WalkStatus.FAILED and "injected" in (walk.error or "")
    assert overlap.most == MERGE_CONNECTIONS
    async with big_pool.acquire() as conn:
        got = await state(conn)
        # the first page's merge committed; the failed one wrote nothing
        assert len(got["images"]) == len(got["created"]) == PAGE_SIZE * (overlap.started - 1)
        assert await ref_count_mismatches(conn) == 0
        assert not await conn.fetchval(
            "SELECT count(*) FROM outbox_events WHERE type = 'registry.image.deleted'"
        )

    # the next pass completes what the failed one left
    monkeypatch.undo()
    again = await ingest_once(big_pool, client, [FOLDER], page_size=PAGE_SIZE)
    assert again.scopes[0].status is WalkStatus.COMPLETE
    assert again.created == IMAGES - len(got["images"])


async def test_a_cancelled_walk_cancels_its_merges_and_the_next_pass_completes(
    big_pool: asyncpg.Pool, client: UpstreamClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    walk: asyncio.Task[Any] | None = None

    async def cancel_the_walk() -> None:
        assert walk is not None
        walk.cancel()  # while both merges are in flight (the first waits for this one)

    overlap = Overlap(on_second=cancel_the_walk)
    overlap.install(monkeypatch)
    walk = asyncio.create_task(ingest_once(big_pool, client, [FOLDER], page_size=PAGE_SIZE))
    with pytest.raises(asyncio.CancelledError):
        await walk
    assert overlap.most == MERGE_CONNECTIONS and overlap.running == 0  # none left running
    async with big_pool.acquire() as conn:
        got = await state(conn)
        # a merge commits whole or not at all, its events with it
        assert len(got["images"]) == len(got["created"])
        assert await ref_count_mismatches(conn) == 0

    monkeypatch.undo()
    again = await ingest_once(big_pool, client, [FOLDER], page_size=PAGE_SIZE)
    assert again.scopes[0].status is WalkStatus.COMPLETE
    async with big_pool.acquire() as conn:
        final = await state(conn)
        assert len(final["images"]) == len(final["created"]) == IMAGES
        assert await ref_count_mismatches(conn) == 0


async def test_a_walk_cancelled_while_it_waits_for_a_merge_cancels_that_merge(
    big_pool: asyncpg.Pool, client: UpstreamClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk waits for its oldest merge when every merge connection is busy; cancelled
    there, it must not leave that merge running on a connection it gives back."""
    from mirror.ingest import walker

    held = asyncio.Event()  # never set while the walk runs: the first merge hangs
    waiting = asyncio.Event()
    running = 0
    merge = PageWriter.merge
    finish = walker._Merges._finish

    async def held_merge(writer: PageWriter, changed: Sequence[PageImage]) -> MergeResult:
        nonlocal running
        running += 1
        try:
            if not held.is_set() and running == 1 and not waiting.is_set():
                await held.wait()
            return await merge(writer, changed)
        finally:
            running -= 1

    async def finishing(self: Any) -> None:
        waiting.set()
        await finish(self)

    monkeypatch.setattr(PageWriter, "merge", held_merge)
    monkeypatch.setattr(walker._Merges, "_finish", finishing)
    walk = asyncio.create_task(ingest_once(big_pool, client, [FOLDER], page_size=PAGE_SIZE))
    await asyncio.wait_for(waiting.wait(), BARRIER_S)
    walk.cancel()
    try:
        with pytest.raises(asyncio.CancelledError):
            await walk
        assert running == 0  # the held merge was cancelled with the walk
    finally:
        held.set()


async def test_invariant_7_merges_in_flight_keep_the_walk_streaming(
    big_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a walk holds stays a few pages whatever the registry's size, with merges in
    flight too: the pages ahead of the compare (as with one merge at a time) and at most
    ``MERGE_CONNECTIONS`` pages being merged."""
    overlap = Overlap()
    overlap.install(monkeypatch)
    source = CountingSource(pages=40, page_size=50)
    summary = await ingest_once(
        big_pool, source, [REG1], page_size=50, progress=CountingProgress(source)
    )
    assert summary.images == 2000 and source.consumed == 40 and source.closed
    assert source.max_lead <= PREFETCH + 2
    assert overlap.most == MERGE_CONNECTIONS  # and no more pages merged at once
