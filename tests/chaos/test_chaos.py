"""The ingest through a corrupting proxy (tests/chaos/proxy.py) to the simulator, with real
PostgreSQL: invariants 1 (no false deletions) and 8 (nothing unvalidated is merged).

Each test: a clean first mirror through the proxy; real changes upstream (a few
deletions, pushes and tag moves, so there is something true to find); one pass
with a fault on, which must land (the proxy counts it), must not report a live
image deleted or a live digest orphaned (outbox events against the simulator's
truth), and must say what went wrong; then a clean pass, which must converge
exactly to the upstream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from mirror.api.operations import DeleteTracker
from mirror.api.sync_status import SELECT_SCOPES, scope_json
from mirror.ingest.loop import ingest_once
from mirror.ingest.summary import IngestSummary, WalkStatus
from mirror.model import Scope, ScopeKind
from mirror.settings import Settings
from mirror.upstream.client import UpstreamClient
from mirror.upstream.retry import RetryPolicy
from mirror.upstream.simulator.config import SimulatorConfig
from mirror.upstream.simulator.server import RunningSimulator, serve_simulator
from mirror.upstream.simulator.state import SimulatedRegistry
from mirror.upstream.throttle import Throttle
from tests.chaos.proxy import ChaosProxy, GetFault, ListFault, OperationFault, serving
from tests.integration.refcounts import REF_COUNT_MISMATCHES

IMAGES = 2000
PAGE_SIZE = 100
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.005, max_retry_after=0.01)


@dataclass
class World:
    upstream: RunningSimulator
    proxy: ChaosProxy
    client: UpstreamClient  # through the proxy
    direct: UpstreamClient  # straight to the simulator: the truth as the API lists it
    pool: asyncpg.Pool
    scopes: list[Scope]
    gone: list[str]  # images really deleted upstream since the first mirror

    @property
    def truth(self) -> SimulatedRegistry:
        return self.upstream.registry

    async def ingest(self, **kwargs: Any) -> IngestSummary:
        return await ingest_once(self.pool, self.client, self.scopes, page_size=PAGE_SIZE, **kwargs)


def _client(session: aiohttp.ClientSession, url: str) -> UpstreamClient:
    settings = Settings.load(env={}, upstream_url=url, operation_url=url)
    return UpstreamClient(
        session, settings, retry=FAST_RETRY, throttle=Throttle(rate=100_000, concurrency=8)
    )


@pytest.fixture
async def world(db_pool: asyncpg.Pool) -> AsyncIterator[World]:
    # a Delete's Operation stays not done for the whole test (the image stays live)
    config = SimulatorConfig(images=IMAGES, seed=13, retry_after=0, operation_delay=3600)
    async with (
        serve_simulator(config) as upstream,
        serving(upstream.url) as proxy,
        aiohttp.ClientSession() as session,
    ):
        truth = upstream.registry
        scopes = [Scope(ScopeKind.FOLDER, f) for f in truth.model.folder_ids]
        w = World(
            upstream,
            proxy,
            _client(session, proxy.url),
            _client(session, upstream.url),
            db_pool,
            scopes,
            [],
        )
        first = await w.ingest()
        assert all(r.status is WalkStatus.COMPLETE for r in first.scopes)
        assert first.created == IMAGES
        # real changes: 6 deletions, 3 pushes, 2 tag moves
        ids = list(truth.ids())
        w.gone = ids[100:1900:300]
        for image_id in w.gone:
            truth.delete(image_id)
        pushed_into = truth.get(ids[7])
        assert pushed_into is not None
        for _ in range(3):
            truth.push(pushed_into.name)
        truth.retag(ids[11], add=["chaos-a"])
        truth.retag(ids[1500], add=["chaos-b"])
        proxy.requests.clear()  # the counts from here on are the faulty pass's
        yield w


# -- what every test checks -------------------------------------------------------------


def live_digests(truth: SimulatedRegistry) -> set[str]:
    return {blob.digest for image in truth.all_images() for blob in image.blobs}


async def mark(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT coalesce(max(id), 0) FROM outbox"))


async def indexed(pool: asyncpg.Pool) -> dict[str, Any]:
    rows = await pool.fetch("SELECT id, image_doc(images) AS doc FROM images")
    return {r["id"]: orjson.loads(r["doc"]) for r in rows}


async def assert_nothing_live_lost(w: World, after: int, before: set[str]) -> None:
    """No live image reported deleted or missing from the index, no live digest orphaned."""
    rows = await w.pool.fetch(
        "SELECT type, key FROM outbox_events WHERE id > $1 AND type IN "
        "('registry.image.deleted', 'registry.blob.orphaned')",
        after,
    )
    deleted = [r["key"] for r in rows if r["type"] == "registry.image.deleted"]
    orphaned = [r["key"] for r in rows if r["type"] == "registry.blob.orphaned"]
    assert [i for i in deleted if w.truth.get(i) is not None] == []
    digests = live_digests(w.truth)
    assert [d for d in orphaned if d in digests] == []
    now = set(await indexed(w.pool))
    assert {i for i in before if w.truth.get(i) is not None} <= now


async def assert_converges(w: World) -> None:
    """Faults off, one pass: the index is the upstream exactly, each real deletion once."""
    w.proxy.off()
    summary = await w.ingest()
    assert [r.status for r in summary.scopes] == [WalkStatus.COMPLETE] * len(w.scopes), [
        r.error for r in summary.scopes
    ]
    expected: dict[str, Any] = {}
    for scope in w.scopes:
        async for page in w.direct.iter_pages(scope):
            expected.update((i["id"], i) for i in page.images)
    assert await indexed(w.pool) == expected
    assert len(expected) == w.truth.count()
    deleted = await w.pool.fetch(
        "SELECT key FROM outbox_events WHERE type = 'registry.image.deleted' ORDER BY key"
    )
    assert [r["key"] for r in deleted] == sorted(set(w.gone))  # over the whole test: once each
    assert summary.anomalies == 0 and summary.errors == 0
    mismatch = await w.pool.fetchval(REF_COUNT_MISMATCHES)
    assert mismatch == 0


async def faulty_pass(w: World) -> tuple[IngestSummary, int, set[str]]:
    before = set(await indexed(w.pool))
    after = await mark(w.pool)
    summary = await w.ingest()
    await assert_nothing_live_lost(w, after, before)
    return summary, after, before


async def last_runs(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT DISTINCT ON (scope) scope, status, error, suspect, unchecked, anomalies"
        " FROM sync_runs ORDER BY scope, id DESC"
    )


# -- Get answered by something that is not the API ----------------------------------------


async def test_html_404_on_get_is_unknown_not_gone(world: World) -> None:
    w = world
    w.proxy.list_fault = ListFault.DROP_IMAGES  # live images the walk misses: candidates
    w.proxy.get_fault = GetFault.HTML_404
    summary, _, _ = await faulty_pass(w)
    assert w.proxy.landed["html-404"] > 0 and w.proxy.landed["drop-images"] > 0
    assert summary.deleted == 0
    assert all(r.status is WalkStatus.FAILED for r in summary.scopes)
    assert all("no well-formed answer" in (r.error or "") for r in summary.scopes)
    assert all("not the API's error body" in (r.error or "") for r in summary.scopes)
    for run in await last_runs(w.pool):
        assert run["status"] == "failed" and "deletion check" in run["error"]
    await assert_converges(w)


async def test_500_saying_code_5_on_get_is_unknown_even_after_retries(world: World) -> None:
    w = world
    w.proxy.list_fault = ListFault.DROP_IMAGES
    w.proxy.get_fault = GetFault.CODE5_500
    summary, _, _ = await faulty_pass(w)
    # every Get was retried and every attempt got the 500: the retries ran out
    assert w.proxy.landed["code5-500"] >= FAST_RETRY.max_attempts
    assert w.proxy.landed["code5-500"] % FAST_RETRY.max_attempts == 0
    assert summary.deleted == 0
    assert all(r.status is WalkStatus.FAILED for r in summary.scopes)
    assert all("answered 500" in (r.error or "") for r in summary.scopes)
    await assert_converges(w)


# -- List pages that are not well-formed ---------------------------------------------------


async def test_truncated_item_stops_the_walk_and_is_not_merged(world: World) -> None:
    w = world
    w.proxy.list_fault = ListFault.TRUNCATED_ITEM
    summary, _, _ = await faulty_pass(w)
    assert w.proxy.landed["truncated-item"] > 0
    assert summary.deleted == 0
    for r in summary.scopes:
        assert r.status is WalkStatus.FAILED
        assert r.error is not None and ".name" in r.error and "missing" in r.error
        assert "request id" in r.error
    # the page was not merged: no update turned an image into {"id": …}
    docs = await indexed(w.pool)
    assert all("digest" in doc and "layers" in doc for doc in docs.values())
    assert w.proxy.requests["get"] == 0  # a failed walk sends no confirmation Get
    await assert_converges(w)


async def test_wrong_types_stop_the_walk_naming_the_field(world: World) -> None:
    w = world
    w.proxy.list_fault = ListFault.WRONG_TYPES
    summary, _, _ = await faulty_pass(w)
    assert w.proxy.landed["wrong-types"] > 0
    for r in summary.scopes:
        assert r.status is WalkStatus.FAILED
        assert r.error is not None and "compressedSize" in r.error and "decimal text" in r.error
    await assert_converges(w)


async def test_cut_body_stops_the_walk(world: World) -> None:
    w = world
    w.proxy.list_fault = ListFault.CUT_BODY
    summary, _, _ = await faulty_pass(w)
    assert w.proxy.landed["cut-body"] == 1
    failed = [r for r in summary.scopes if r.status is WalkStatus.FAILED]
    assert len(failed) == 1 and "not JSON" in (failed[0].error or "")
    await assert_converges(w)


# -- walks that end early, loop, lose or repeat images -------------------------------------


async def test_empty_page_makes_a_suspect_walk_that_sends_no_get(world: World) -> None:
    w = world
    w.proxy.list_fault = ListFault.EMPTY_PAGE
    summary, _, _ = await faulty_pass(w)
    # every walk met it (a walk reading ahead on remembered tokens meets it more than once)
    assert w.proxy.emptied == {s.id for s in w.scopes}
    assert w.proxy.landed["empty-page"] >= len(w.scopes)
    assert w.proxy.requests["get"] == 0  # no confirmation Get at all
    assert summary.deleted == 0
    for r in summary.scopes:
        assert r.status is WalkStatus.FAILED and r.suspect is not None
        assert "MIRROR_DELETE_GUARD" in r.suspect and r.unchecked > 0
        assert r.images == PAGE_SIZE  # the one page it saw
    for run in await last_runs(w.pool):
        assert run["suspect"] and run["unchecked"] > 0 and "suspect walk" in run["error"]
    # what /mirror/v1/sync (and the dashboard) shows for each scope
    for row in await w.pool.fetch(SELECT_SCOPES):
        shown = scope_json(row)
        assert "MIRROR_DELETE_GUARD" in shown["lastRun"]["suspect"]
        assert int(shown["lastRun"]["unchecked"]) > 0 and shown["lastRun"]["status"] == "failed"
        assert "suspect walk" in shown["lastError"]
    await assert_converges(w)
    for row in await w.pool.fetch(SELECT_SCOPES):
        assert "suspect" not in scope_json(row)["lastRun"] and "lastError" not in scope_json(row)


async def test_page_token_loop_fails_the_walk_at_once(world: World) -> None:
    w = world
    w.proxy.list_fault = ListFault.TOKEN_LOOP
    summary, _, _ = await faulty_pass(w)
    assert w.proxy.landed["token-loop"] > 0
    for r in summary.scopes:
        assert r.status is WalkStatus.FAILED and "page token" in (r.error or "")
    # the loop was noticed on the page that closed it: two pages a walk, then it stopped
    assert w.proxy.requests["list"] <= 3 * len(w.scopes)
    assert w.proxy.requests["get"] == 0
    await assert_converges(w)


async def test_dropped_images_are_confirmed_present_and_stay(world: World) -> None:
    w = world
    w.proxy.list_fault = ListFault.DROP_IMAGES
    summary, _, before = await faulty_pass(w)
    assert w.proxy.landed["drop-images"] == len(w.proxy.dropped) > 0
    # the dropped ones the index held were asked about, found, and kept; the really
    # deleted went
    assert summary.anomalies == len([i for i in w.proxy.dropped if i in before]) > 0
    assert summary.deleted == len(w.gone)
    assert all(r.status is WalkStatus.COMPLETE for r in summary.scopes)
    await assert_converges(w)


async def test_duplicated_images_are_counted_once_and_reported(world: World) -> None:
    w = world
    w.proxy.list_fault = ListFault.DUPLICATE_IMAGES
    summary, after, _ = await faulty_pass(w)
    pages = w.proxy.landed["duplicate-images"]
    assert pages > 0
    # each page repeats one of its own, and every page but a walk's first the last one
    # of the page before
    duplicates = pages + (pages - len(w.scopes))
    assert summary.anomalies == duplicates
    assert summary.images == w.truth.count()  # never a double count
    keys = [
        (r["type"], r["key"])
        for r in await w.pool.fetch("SELECT type, key FROM outbox_events WHERE id > $1", after)
    ]
    assert len(keys) == len(set(keys))  # no event twice
    await assert_converges(w)


async def test_churn_through_a_lossy_proxy_deletes_only_what_is_gone(world: World) -> None:
    w = world
    w.proxy.list_fault = ListFault.DROP_IMAGES
    churn = w.upstream.simulator.churn
    seq = w.truth.last_seq
    before = set(await indexed(w.pool))
    after = await mark(w.pool)
    churn.rate = 400
    try:
        for _ in range(2):
            summary = await w.ingest()
            assert summary.scopes
    finally:
        churn.rate = 0
    changes = w.truth.changes_after(seq, limit=100_000)
    assert sum(1 for c in changes if c.type.value == "delete") > 0  # the churn landed
    assert w.proxy.landed["drop-images"] > 0
    # a deletion is final upstream: an image.deleted for an image live now is false
    deleted = await w.pool.fetch(
        "SELECT key FROM outbox_events WHERE id > $1 AND type = 'registry.image.deleted'", after
    )
    assert [r["key"] for r in deleted if w.truth.get(r["key"]) is not None] == []
    # a digest left orphaned but live now is true only if every image holding it now was
    # pushed during the churn (after its last indexed holder went, before a walk saw it);
    # a holder live since before the churn would make the orphaning false
    events = await w.pool.fetch(
        "SELECT type, key FROM outbox_events WHERE id > $1 AND topic = 'blobs' ORDER BY id", after
    )
    state: dict[str, str] = {}
    for e in events:
        state[e["key"]] = e["type"]
    orphaned = {d for d, t in state.items() if t == "registry.blob.orphaned"}
    pushed = {c.image_id for c in changes if c.type.value == "push"}
    held_since_before = [
        (blob.digest, image.id)
        for image in w.truth.all_images()
        for blob in image.blobs
        if blob.digest in orphaned and image.id not in pushed
    ]
    assert held_since_before == []
    assert {i for i in before if w.truth.get(i) is not None} <= set(await indexed(w.pool))
    w.gone += [c.image_id for c in changes if c.type.value == "delete" and c.image_id in before]
    w.gone += [
        c.image_id
        for c in changes
        if c.type.value == "delete" and c.image_id not in before and await _was_indexed(w, c)
    ]
    await assert_converges(w)


async def _was_indexed(w: World, change: Any) -> bool:
    """An image pushed and deleted during the churn: did a pass index it (then its deletion
    is an event too)?"""
    return bool(
        await w.pool.fetchval(
            "SELECT count(*) FROM outbox_events WHERE key = $1 AND type = 'registry.image.created'",
            change.image_id,
        )
    )


# -- the Operation poll after a Delete through the local API --------------------------------


async def test_an_operation_done_without_a_result_settles_nothing(world: World) -> None:
    w = world
    victim = sorted(await indexed(w.pool))[5]
    tracker = DeleteTracker(w.pool, w.client)
    operation = await tracker.start_delete(victim)
    assert operation["done"] is False
    w.proxy.operation_fault = OperationFault.DONE_WITHOUT_RESULT
    after = await mark(w.pool)
    assert await tracker.follow(operation["id"]) is None  # no well-formed answer: unknown
    assert await tracker.poll_pending() == 1
    assert w.proxy.landed["done-without-result"] == 2
    assert victim in await indexed(w.pool) and w.truth.get(victim) is not None
    assert await mark(w.pool) == after  # no event
    row = await w.pool.fetchrow(
        "SELECT done, applied FROM operations WHERE id = $1", operation["id"]
    )
    assert (row["done"], row["applied"]) == (False, False)
    w.proxy.off()
    followed = await tracker.follow(operation["id"])
    assert followed is not None and followed["done"] is False
    assert victim in await indexed(w.pool)
