"""The head-watch against the upstream simulator and real PostgreSQL: pushes are recorded
in one round, with their tag events; the full walk and the head-watch never report an
image twice, even racing; scopes never walked are left alone."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson

from mirror.ingest.head import HeadWatch, run_head_watch, unknown_images
from mirror.ingest.loop import ingest_once
from mirror.ingest.merge import PageWriter
from mirror.ingest.staging import page_images
from tests.integration import test_ingest_simulator as sim
from tests.integration.test_ingest_simulator import admin, folder_scopes

# The simulator (3,000 images) and a client of it: the fixtures of the ingest's simulator tests.
upstream, session, client = sim.upstream, sim.session, sim.client


async def events_after(conn: asyncpg.Connection, mark: int) -> list[tuple[str, str, Any]]:
    rows = await conn.fetch(
        "SELECT type, key, data::text AS data FROM outbox_events WHERE id > $1 ORDER BY id", mark
    )
    return [(r["type"], r["key"], orjson.loads(r["data"])) for r in rows]


async def last_id(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox"))


async def push_some(session, upstream, n: int) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """``n`` pushes into existing repositories, each taking the repository's ``latest``."""
    state = await admin(session, upstream, "GET", "/state")
    registry = state["folders"][0]["registries"][0]["id"]
    repos = await admin(session, upstream, "GET", f"/repositories?registryId={registry}")
    names = [r["name"] for r in repos["repositories"]][:n]
    return [
        await admin(
            session, upstream, "POST", "/images", {"repositoryName": name, "tags": ["latest"]}
        )
        for name in names
    ]


def test_a_known_image_does_not_hide_older_unknown_ones() -> None:
    page = [{"id": "c"}, {"id": "b"}, {"id": "a"}, {"id": "z"}]
    assert unknown_images(page, {"a"}) == [{"id": "c"}, {"id": "b"}, {"id": "z"}]
    assert unknown_images(page, {"c"}) == [{"id": "b"}, {"id": "a"}, {"id": "z"}]
    assert unknown_images(page, set()) == page


async def test_a_round_records_pushes_once_and_the_walk_does_not_repeat_them(
    db_pool, upstream, session, client
) -> None:  # type: ignore[no-untyped-def]
    scopes = await folder_scopes(session, upstream)
    watch = HeadWatch(db_pool, client, scopes, interval=5)
    assert await watch.round() == 0  # nothing walked yet: left to the first mirror
    async with db_pool.acquire() as conn:
        assert await last_id(conn) == 0
    await ingest_once(db_pool, client, scopes)
    pushed = await push_some(session, upstream, 4)
    async with db_pool.acquire() as conn:
        mark = await last_id(conn)
    assert await watch.round() == len(pushed)
    assert await watch.round() == 0  # already indexed: nothing more
    async with db_pool.acquire() as conn:
        seen = await events_after(conn, mark)
        created = [(k, d) for t, k, d in seen if t == "registry.image.created"]
        assert sorted(k for k, _ in created) == sorted(p["id"] for p in pushed)
        assert all(d["via"] == "head-watch" for _, d in created)
        # the pushes took 'latest': one tag event each, moved from the previous holder
        added = {k: d for t, k, d in seen if t == "registry.tag.added"}
        assert set(added) == {f"{p['name']}:latest" for p in pushed}
        assert {d["imageId"] for d in added.values()} == {p["id"] for p in pushed}
        mark = await last_id(conn)
    summary = await ingest_once(db_pool, client, scopes)
    assert summary.created == 0 and summary.deleted == 0
    async with db_pool.acquire() as conn:
        after_walk = await events_after(conn, mark)
    # the walk updates the images that lost 'latest' and writes no tag or creation event
    assert {t for t, _, _ in after_walk} <= {"registry.image.updated"}
    assert len(after_walk) == sum(1 for d in added.values() if d.get("previousImageId"))


async def test_a_newer_image_a_walk_indexed_does_not_hide_an_older_push(
    db_pool, upstream, session, client
) -> None:  # type: ignore[no-untyped-def]
    scopes = await folder_scopes(session, upstream)
    await ingest_once(db_pool, client, scopes)
    older, newer = await push_some(session, upstream, 2)
    image = await client.get_image(newer["id"])
    async with db_pool.acquire() as conn:  # as a walk passing by would have
        writer = PageWriter(conn)
        await writer.prepare()
        assert (await writer.apply(page_images([image]))).created == 1
        await writer.close()
        mark = await last_id(conn)
    assert await HeadWatch(db_pool, client, scopes, interval=5).round() == 1
    async with db_pool.acquire() as conn:
        created = [k for t, k, _ in await events_after(conn, mark) if t == "registry.image.created"]
    assert created == [older["id"]]


async def test_head_watch_and_walk_racing_report_each_push_once(
    db_pool, upstream, session, client
) -> None:  # type: ignore[no-untyped-def]
    scopes = await folder_scopes(session, upstream)
    await ingest_once(db_pool, client, scopes)
    pushed = await push_some(session, upstream, 6)
    async with db_pool.acquire() as conn:
        mark = await last_id(conn)
    watch = HeadWatch(db_pool, client, scopes, interval=5)
    await asyncio.gather(ingest_once(db_pool, client, scopes, page_size=50), watch.round())
    async with db_pool.acquire() as conn:
        seen = await events_after(conn, mark)
    created = sorted(k for t, k, _ in seen if t == "registry.image.created")
    assert created == sorted(p["id"] for p in pushed)
    tag_keys = [k for t, k, _ in seen if t.startswith("registry.tag.")]
    assert sorted(tag_keys) == sorted({f"{p['name']}:latest" for p in pushed})


async def test_run_head_watch_is_off_at_zero_and_stops_with_stop(
    db_pool, upstream, session, client
) -> None:  # type: ignore[no-untyped-def]
    scopes = await folder_scopes(session, upstream)
    stop = asyncio.Event()
    await asyncio.wait_for(run_head_watch(db_pool, client, scopes, 0, stop), 5)  # off: returns
    await ingest_once(db_pool, client, scopes)
    pushed = await push_some(session, upstream, 1)
    task = asyncio.create_task(run_head_watch(db_pool, client, scopes, 0.05, stop))
    for _ in range(400):
        async with db_pool.acquire() as conn:
            if await conn.fetchval("SELECT count(*) FROM images WHERE id = $1", pushed[0]["id"]):
                break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
    async with db_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM images WHERE id = $1", pushed[0]["id"])
