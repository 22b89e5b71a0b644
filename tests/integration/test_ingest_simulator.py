"""The ingest with the upstream simulator (in-process, on a free port) and real PostgreSQL;
faults and changes go through the simulator's admin API."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from mirror.ingest.loop import ingest_once
from mirror.ingest.memo import CHECK_AND_SEE
from mirror.ingest.merge import CREATE_WALK_TABLES, delete_images
from mirror.ingest.summary import WalkStatus
from mirror.model import Scope
from mirror.settings import Settings
from mirror.upstream.client import KnownPage, Page, RememberedNext, UpstreamClient
from mirror.upstream.retry import RetryPolicy
from mirror.upstream.simulator.config import SimulatorConfig
from mirror.upstream.simulator.server import RunningSimulator, serve_simulator
from mirror.upstream.throttle import Throttle
from tests.integration.refcounts import BLOB_REFERENCES, REF_COUNT_MISMATCHES

FAST_RETRY = RetryPolicy(max_attempts=12, base_delay=0.001, max_delay=0.02, max_retry_after=0.05)


@pytest.fixture
async def upstream() -> AsyncIterator[RunningSimulator]:
    async with serve_simulator(SimulatorConfig(images=3000, seed=7, retry_after=0)) as running:
        yield running


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def client(upstream: RunningSimulator, session: aiohttp.ClientSession) -> UpstreamClient:
    settings = Settings.load(env={}, upstream_url=upstream.url, operation_url=upstream.url)
    return UpstreamClient(
        session, settings, retry=FAST_RETRY, throttle=Throttle(rate=100_000, concurrency=8)
    )


async def admin(
    session: aiohttp.ClientSession,
    upstream: RunningSimulator,
    method: str,
    path: str,
    body: Any = None,
) -> Any:
    async with session.request(method, f"{upstream.url}/_simulator{path}", json=body) as resp:
        assert resp.status < 300, await resp.text()
        return (
            orjson.loads(await resp.read())
            if resp.content_type == "application/json"
            else await resp.text()
        )


async def folder_scopes(session: aiohttp.ClientSession, upstream: RunningSimulator) -> list[Scope]:
    state = await admin(session, upstream, "GET", "/state")
    return [Scope.parse(f"folder:{f['id']}") for f in state["folders"]]


async def upstream_images(client: UpstreamClient, scopes: list[Scope]) -> dict[str, dict[str, Any]]:
    """Everything the upstream lists (while nothing changes)."""
    out: dict[str, dict[str, Any]] = {}
    for scope in scopes:
        async for page in client.iter_pages(scope):
            out.update((i["id"], i) for i in page.images)
    return out


async def indexed(conn: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    return {
        r["id"]: orjson.loads(r["doc"])
        for r in await conn.fetch("SELECT id, image_doc(images) AS doc FROM images")
    }


async def image_events(conn: asyncpg.Connection, after: int = 0) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT type, key FROM outbox_events WHERE id > $1 AND topic = 'images' ORDER BY id", after
    )
    return [(r["type"], r["key"]) for r in rows]


class AfterPages:
    """Wraps the client: runs an admin action once the walk has read ``n`` pages."""

    def __init__(self, client: UpstreamClient, n: int, action: Any) -> None:
        self.client, self.n, self.action, self.pages = client, n, action, 0

    async def iter_pages(
        self,
        scope: Scope,
        page_size: int = 1000,
        *,
        known: KnownPage | None = None,
        remembered: RememberedNext | None = None,
    ) -> AsyncGenerator[Page, None]:
        async for page in self.client.iter_pages(
            scope, page_size, known=known, remembered=remembered
        ):
            yield page
            self.pages += 1
            if self.pages == self.n:
                await self.action()

    async def get_image(self, image_id: str) -> dict[str, Any] | None:
        return await self.client.get_image(image_id)


async def test_first_sync_equals_the_simulator_exactly(db_pool, upstream, session, client) -> None:  # type: ignore[no-untyped-def]
    scopes = await folder_scopes(session, upstream)
    summary = await ingest_once(db_pool, client, scopes, page_size=500)
    assert all(r.status is WalkStatus.COMPLETE for r in summary.scopes)
    expected = await upstream_images(client, scopes)
    assert summary.images == summary.created == len(expected) == 3000
    async with db_pool.acquire() as conn:
        assert await indexed(conn) == expected
        created = {k for t, k in await image_events(conn) if t == "registry.image.created"}
        assert created == set(expected)
        layers = sum(len(i.get("layers", ())) + ("config" in i) for i in expected.values())
        assert await conn.fetchval(BLOB_REFERENCES) == layers
        mismatch = await conn.fetchval(REF_COUNT_MISMATCHES)
        assert mismatch == 0
        # created_ns (the API's createdAt order) comes from the ingest: the SQL definition agrees
        sort_mismatch = await conn.fetchval(
            "SELECT count(*) FROM images WHERE created_ns <> mirror_rfc3339_ns(image_doc(images)::json ->> 'createdAt')"
        )
        assert sort_mismatch == 0


async def test_invariant_6_unchanged_simulator_resync_writes_nothing(
    db_pool, upstream, session, client
) -> None:  # type: ignore[no-untyped-def]
    scopes = await folder_scopes(session, upstream)
    await ingest_once(db_pool, client, scopes)
    async with db_pool.acquire() as conn:
        query = "SELECT count(*), coalesce(sum(xmin::text::bigint), 0) FROM {}"
        before = [
            tuple(await conn.fetchrow(query.format(t))) for t in ("images", "blobs", "outbox")
        ]
    summary = await ingest_once(db_pool, client, scopes)
    assert (summary.images, summary.created, summary.updated, summary.deleted) == (3000, 0, 0, 0)
    async with db_pool.acquire() as conn:
        after = [tuple(await conn.fetchrow(query.format(t))) for t in ("images", "blobs", "outbox")]
    assert after == before


class RecordingPages:
    """Wraps the client: remembers, per page, whether the memo recognised it."""

    def __init__(self, client: UpstreamClient) -> None:
        self.client = client
        self.known: list[bool] = []
        # per page: the next token it gave, and the one the walk remembered for it
        # (what the client reads ahead on)
        self.chain: list[tuple[str, str | None]] = []

    async def iter_pages(
        self,
        scope: Scope,
        page_size: int = 1000,
        *,
        known: KnownPage | None = None,
        remembered: RememberedNext | None = None,
    ) -> AsyncGenerator[Page, None]:
        async for page in self.client.iter_pages(
            scope, page_size, known=known, remembered=remembered
        ):
            self.known.append(page.known)
            guess = remembered(page.page_token) if remembered is not None else None
            self.chain.append((page.next_page_token, guess))
            yield page

    async def get_image(self, image_id: str) -> dict[str, Any] | None:
        return await self.client.get_image(image_id)


async def test_unchanged_resync_is_served_from_the_page_memo(
    db_pool, upstream, session, client
) -> None:  # type: ignore[no-untyped-def]
    scopes = await folder_scopes(session, upstream)
    first = RecordingPages(client)
    await ingest_once(db_pool, first, scopes, page_size=500)
    assert first.known and not any(first.known)
    second = RecordingPages(client)
    summary = await ingest_once(db_pool, second, scopes, page_size=500)
    assert (summary.images, summary.created, summary.updated, summary.deleted) == (3000, 0, 0, 0)
    assert second.known == [True] * len(first.known)
    # the walk handed the client the memo's chain: every remembered next token is the
    # one the page gave (the first walk remembered none)
    assert all(guess is None for _, guess in first.chain)
    assert [guess for _, guess in second.chain] == [t or None for t, _ in second.chain]
    async with db_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM ingest_page_memo") == len(first.known)


async def test_page_memo_never_hides_an_index_that_changed(
    db_pool, upstream, session, client
) -> None:  # type: ignore[no-untyped-def]
    """The upstream is unchanged but the index is not: the memo's page is merged again."""
    scopes = await folder_scopes(session, upstream)
    await ingest_once(db_pool, client, scopes, page_size=500)
    expected = await upstream_images(client, scopes)
    gone = sorted(expected)[7]
    async with db_pool.acquire() as conn, conn.transaction():
        await delete_images(conn, [gone], "upstream-gone")
    pages = RecordingPages(client)
    summary = await ingest_once(db_pool, pages, scopes, page_size=500)
    assert (summary.images, summary.created, summary.updated, summary.deleted) == (3000, 1, 0, 0)
    assert pages.known.count(True) == len(pages.known)  # the body matched: the index did not
    async with db_pool.acquire() as conn:
        assert await indexed(conn) == expected
        again = RecordingPages(client)
        await ingest_once(db_pool, again, scopes, page_size=500)
        assert (await indexed(conn)) == expected


# What the memo's check is given to doubt, each applied to the first image of a
# remembered page inside a transaction that is rolled back.
MEMO_DOUBTS = {
    "unchanged": None,
    "deleted": "DELETE FROM images WHERE id = $1",
    "content changed": "UPDATE images SET content_hash = sha256(content_hash) WHERE id = $1",
    "in another folder": "UPDATE images SET folder_id = 'elsewhere' WHERE id = $1",
}


@pytest.mark.parametrize("doubt", list(MEMO_DOUBTS))
async def test_the_memo_check_trusts_a_page_only_while_the_index_holds_it_all(
    db_pool, upstream, session, client, doubt
) -> None:  # type: ignore[no-untyped-def]
    """``CHECK_AND_SEE`` against the real index: ok (and every id recorded as seen)
    only when every remembered image is there, with its content hash, in the folder."""
    scopes = await folder_scopes(session, upstream)
    await ingest_once(db_pool, client, scopes, page_size=500)
    folder = scopes[0].id
    async with db_pool.acquire() as conn:
        memo = await conn.fetchrow(
            "SELECT walk_key, page_token, body_hash, ids FROM ingest_page_memo"
            " WHERE walk_key LIKE $1 AND cardinality(ids) > 1 ORDER BY page_token LIMIT 1",
            f"folder:{folder}?%",
        )
        assert memo is not None and memo["ids"] == sorted(memo["ids"])
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(CREATE_WALK_TABLES)
            if MEMO_DOUBTS[doubt] is not None:
                assert await conn.execute(MEMO_DOUBTS[doubt], memo["ids"][0]) != "UPDATE 0"
            row = await conn.fetchrow(
                CHECK_AND_SEE, memo["walk_key"], memo["page_token"], memo["body_hash"], folder
            )
            seen = await conn.fetchval(
                'SELECT array_agg(id ORDER BY id COLLATE "C") FROM ingest_walk_seen'
            )
            other_body = await conn.fetchrow(
                CHECK_AND_SEE, memo["walk_key"], memo["page_token"], b"other", folder
            )
            # a registry walk's check (no folder) does not look at the folder
            any_folder = await conn.fetchrow(
                CHECK_AND_SEE, memo["walk_key"], memo["page_token"], memo["body_hash"], None
            )
        finally:
            await tx.rollback()
    assert not other_body["ok"]
    assert any_folder["ok"] is (doubt in ("unchanged", "in another folder"))
    if doubt == "unchanged":
        assert row["ok"] and row["images"] == len(memo["ids"]) and seen == memo["ids"]
        assert (row["first_id"], row["last_id"]) == (memo["ids"][0], memo["ids"][-1])
    else:
        assert not row["ok"] and row["images"] == 0 and seen is None


async def test_a_changed_page_is_parsed_and_its_memo_rewritten(
    db_pool, upstream, session, client
) -> None:  # type: ignore[no-untyped-def]
    scopes = await folder_scopes(session, upstream)
    await ingest_once(db_pool, client, scopes, page_size=500)
    some = sorted(await upstream_images(client, scopes))[0]
    await admin(session, upstream, "POST", f"/images/{some}/tags", {"add": ["moved-here"]})
    changed = RecordingPages(client)
    summary = await ingest_once(db_pool, changed, scopes, page_size=500)
    assert (summary.created, summary.updated, summary.deleted) == (0, 1, 0)
    assert changed.known.count(False) == 1
    after = RecordingPages(client)
    await ingest_once(db_pool, after, scopes, page_size=500)
    assert all(after.known)


async def test_a_complete_walk_forgets_pages_it_no_longer_asks_for(
    db_pool, upstream, session, client
) -> None:  # type: ignore[no-untyped-def]
    scopes = await folder_scopes(session, upstream)
    await ingest_once(db_pool, client, scopes, page_size=500)
    key = f"{scopes[0]}?pageSize=500"
    async with db_pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO ingest_page_memo VALUES ($1, 'gone', '', '', '{}', '', '{}')", key
        )
        before = await conn.fetchval("SELECT count(*) FROM ingest_page_memo")
    await ingest_once(db_pool, client, scopes, page_size=500)
    async with db_pool.acquire() as conn:
        rows = await conn.fetch("SELECT walk_key, page_token FROM ingest_page_memo")
    assert len(rows) == before - 1
    assert (key, "gone") not in {(r["walk_key"], r["page_token"]) for r in rows}


async def test_pushes_tag_moves_and_deletes_give_exactly_the_right_events(
    db_pool, upstream, session, client
) -> None:  # type: ignore[no-untyped-def]
    scopes = await folder_scopes(session, upstream)
    await ingest_once(db_pool, client, scopes)
    before = await upstream_images(client, scopes)
    some = sorted(before)
    repo = before[some[0]]["name"]
    await admin(session, upstream, "POST", "/images", {"repositoryName": repo, "tags": ["fresh"]})
    await admin(session, upstream, "POST", f"/images/{some[1]}/tags", {"add": ["moved-here"]})
    await admin(
        session,
        upstream,
        "POST",
        f"/images/{some[2]}/tags",
        {"remove": before[some[2]].get("tags", [])},
    )
    await admin(session, upstream, "DELETE", f"/images/{some[3]}")
    await admin(session, upstream, "DELETE", f"/images/{some[4]}")
    after = await upstream_images(client, scopes)
    expected = sorted(
        [("registry.image.created", k) for k in after.keys() - before.keys()]
        + [("registry.image.deleted", k) for k in before.keys() - after.keys()]
        + [
            ("registry.image.updated", k)
            for k in after.keys() & before.keys()
            if after[k] != before[k]
        ]
    )
    async with db_pool.acquire() as conn:
        mark = await conn.fetchval("SELECT max(id) FROM outbox")
    summary = await ingest_once(db_pool, client, scopes)
    assert (summary.created, summary.deleted) == (1, 2)
    async with db_pool.acquire() as conn:
        assert sorted(await image_events(conn, mark)) == expected
        assert await indexed(conn) == after


async def test_invariant_1_5xx_storm_mid_walk_deletes_nothing_then_converges(
    db_pool, upstream, session, client
) -> None:  # type: ignore[no-untyped-def]
    scopes = await folder_scopes(session, upstream)
    await ingest_once(db_pool, client, scopes[:1], page_size=200)
    victim = sorted(await upstream_images(client, scopes[:1]))[-1]
    await admin(session, upstream, "DELETE", f"/images/{victim}")

    async def storm() -> None:
        await admin(session, upstream, "PATCH", "/faults", {"errorRate": 1.0})

    summary = await ingest_once(db_pool, AfterPages(client, 2, storm), scopes[:1], page_size=200)
    assert summary.scopes[0].status is WalkStatus.FAILED and summary.deleted == 0
    async with db_pool.acquire() as conn:
        assert victim in await indexed(conn)
    await admin(session, upstream, "PATCH", "/faults", {"errorRate": 0.0})
    summary = await ingest_once(db_pool, client, scopes[:1], page_size=200)
    assert summary.scopes[0].status is WalkStatus.COMPLETE and summary.deleted == 1
    async with db_pool.acquire() as conn:
        assert await indexed(conn) == await upstream_images(client, scopes[:1])


async def test_invariant_1_offset_page_shift_under_deletes_is_no_false_deletion(
    db_pool, upstream, session, client
) -> None:  # type: ignore[no-untyped-def]
    scopes = await folder_scopes(session, upstream)
    await ingest_once(db_pool, client, scopes[:1], page_size=100)
    ids = sorted(await upstream_images(client, scopes[:1]))

    async def delete_early() -> None:
        for image_id in ids[:10]:  # already walked past: the next pages shift by 10
            await admin(session, upstream, "DELETE", f"/images/{image_id}")

    summary = await ingest_once(
        db_pool, AfterPages(client, 3, delete_early), scopes[:1], page_size=100
    )
    result = summary.scopes[0]
    assert result.status is WalkStatus.COMPLETE
    assert result.deleted == 0 and result.anomalies == 10  # skipped by the shift, confirmed present
    async with db_pool.acquire() as conn:
        assert set(await indexed(conn)) == set(ids)
    summary = await ingest_once(db_pool, client, scopes[:1], page_size=100)
    assert summary.deleted == 10
    async with db_pool.acquire() as conn:
        assert await indexed(conn) == await upstream_images(client, scopes[:1])
        deleted = sorted(k for t, k in await image_events(conn) if t == "registry.image.deleted")
        assert deleted == ids[:10]


async def test_429_and_drop_storm_is_ridden_out(db_pool, upstream, session, client) -> None:  # type: ignore[no-untyped-def]
    scopes = await folder_scopes(session, upstream)
    await admin(
        session,
        upstream,
        "PATCH",
        "/faults",
        {"throttleRate": 0.4, "retryAfter": 0, "dropRate": 0.1},
    )
    summary = await ingest_once(db_pool, client, scopes, page_size=250)
    assert all(r.status is WalkStatus.COMPLETE for r in summary.scopes)
    await admin(session, upstream, "PATCH", "/faults", {"throttleRate": 0, "dropRate": 0})
    async with db_pool.acquire() as conn:
        assert await indexed(conn) == await upstream_images(client, scopes)


async def test_churn_during_walks_never_reports_a_live_image_deleted(
    db_pool, upstream, session, client
) -> None:  # type: ignore[no-untyped-def]
    scopes = await folder_scopes(session, upstream)
    await admin(session, upstream, "PUT", "/churn", {"rate": 400})
    for _ in range(3):
        summary = await ingest_once(db_pool, client, scopes, page_size=100)
        # A walk may end on an empty page when deletions shift the offset tokens under it:
        # the guard then calls it suspect and deletes nothing (its failure by design).
        # Any other failure is one.
        for result in summary.scopes:
            assert result.status is WalkStatus.COMPLETE or result.suspect is not None, result
    await admin(session, upstream, "PUT", "/churn", {"rate": 0})
    await ingest_once(db_pool, client, scopes, page_size=100)
    await ingest_once(db_pool, client, scopes, page_size=100)
    live = await upstream_images(client, scopes)
    async with db_pool.acquire() as conn:
        assert await indexed(conn) == live
        deleted = {k for t, k in await image_events(conn) if t == "registry.image.deleted"}
        assert not deleted & live.keys()
