"""Tag events against the brute-force truth of the simulator: after random pushes,
re-tags and deletes, one complete ingest pass writes exactly one event per
(repository, tag) whose image changed, and none other (real PostgreSQL)."""

from __future__ import annotations

import random
from typing import Any

import asyncpg
import orjson

from mirror.ingest.loop import ingest_once
from mirror.ingest.tags import REASON_IMAGE_DELETED, REASON_UNTAGGED
from tests.integration import test_ingest_simulator as sim
from tests.integration.test_ingest_simulator import admin, folder_scopes, upstream_images

# The simulator (3,000 images) and a client of it: the fixtures of the ingest's simulator tests.
upstream, session, client = sim.upstream, sim.session, sim.client

Truth = dict[tuple[str, str], str]  # (repository, tag) -> image id


def tag_truth(images: dict[str, dict[str, Any]]) -> Truth:
    truth: Truth = {}
    for image in images.values():
        for tag in image.get("tags", ()):
            key = (image["name"], tag)
            assert key not in truth, f"two images carry {key}"
            truth[key] = image["id"]
    return truth


def expected_events(
    before: Truth, after: Truth, live: dict[str, dict[str, Any]]
) -> list[tuple[str, str, str, str | None, str | None]]:
    """(type, subject, imageId, previousImageId, reason) of every tag change."""
    out: list[tuple[str, str, str, str | None, str | None]] = []
    for key in before.keys() | after.keys():
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        subject = f"{key[0]}:{key[1]}"
        if new is not None:
            out.append(("registry.tag.added", subject, new, old, None))
        else:
            assert old is not None
            reason = REASON_UNTAGGED if old in live else REASON_IMAGE_DELETED
            out.append(("registry.tag.removed", subject, old, None, reason))
    return sorted(out, key=lambda e: (e[0], e[1]))


async def tag_events(
    conn: asyncpg.Connection, after: int
) -> list[tuple[str, str, str, str | None, str | None]]:
    rows = await conn.fetch(
        "SELECT type, key, data::text AS data FROM outbox_events WHERE id > $1 AND topic = 'tags' "
        "ORDER BY id",
        after,
    )
    out = []
    for r in rows:
        data = orjson.loads(r["data"])
        assert r["key"] == f"{data['repository']}:{data['tag']}"
        out.append(
            (r["type"], r["key"], data["imageId"], data.get("previousImageId"), data.get("reason"))
        )
    return sorted(out, key=lambda e: (e[0], e[1]))


async def random_changes(
    rng: random.Random, session, upstream, images: dict[str, dict[str, Any]], n: int
) -> None:  # type: ignore[no-untyped-def]
    """Pushes that take ``latest``, tags moved between images of a repository, tags
    removed, and images deleted (some of them holding tags)."""
    ids = sorted(images)
    by_repo: dict[str, list[str]] = {}
    for image_id in ids:
        by_repo.setdefault(images[image_id]["name"], []).append(image_id)
    repos = sorted(r for r, members in by_repo.items() if len(members) > 1)
    deleted: set[str] = set()
    for _ in range(n):
        action = rng.choice(("push", "move", "untag", "delete", "delete"))
        repo = rng.choice(repos)
        members = [i for i in by_repo[repo] if i not in deleted]
        if len(members) < 2:
            continue
        if action == "push":
            tags = ["latest", f"v{rng.randrange(10**6)}"]
            await admin(
                session, upstream, "POST", "/images", {"repositoryName": repo, "tags": tags}
            )
        elif action == "move":
            source, target = rng.sample(members, 2)
            tags = images[source].get("tags") or ["moved"]
            await admin(
                session, upstream, "POST", f"/images/{target}/tags", {"add": [rng.choice(tags)]}
            )
        elif action == "untag":
            target = rng.choice(members)
            tags = images[target].get("tags", [])
            if tags:
                body = {"remove": [rng.choice(tags)]}
                await admin(session, upstream, "POST", f"/images/{target}/tags", body)
        else:
            target = rng.choice(members)
            await admin(session, upstream, "DELETE", f"/images/{target}")
            deleted.add(target)


async def test_tag_events_equal_the_simulators_tag_changes(
    db_pool, upstream, session, client
) -> None:  # type: ignore[no-untyped-def]
    scopes = await folder_scopes(session, upstream)
    await ingest_once(db_pool, client, scopes, page_size=97)
    async with db_pool.acquire() as conn:
        # The first mirror: every tag of the upstream is added once.
        first = await tag_events(conn, 0)
        current = await upstream_images(client, scopes)
        assert first == expected_events({}, tag_truth(current), current)
    rng = random.Random(16)
    for round_ in range(4):
        before = tag_truth(current)
        await random_changes(rng, session, upstream, current, 60)
        current = await upstream_images(client, scopes)
        after = tag_truth(current)
        async with db_pool.acquire() as conn:
            mark = await conn.fetchval("SELECT max(id) FROM outbox")
        # Small pages: the two images of a move are usually met on different pages.
        await ingest_once(db_pool, client, scopes, page_size=97)
        async with db_pool.acquire() as conn:
            got = await tag_events(conn, mark)
            want = expected_events(before, after, current)
            assert want, "the random changes moved no tag"
            assert got == want, f"round {round_}"
            rows = await conn.fetch(
                "SELECT p.name AS repository, t.tag, t.image_id FROM tags t"
                " JOIN tag_repositories p ON p.id = t.repository_id"
            )
            assert {(r["repository"], r["tag"]): r["image_id"] for r in rows} == after


async def test_a_tag_moved_across_pages_is_one_added_event_either_way(
    db_pool, upstream, session, client
) -> None:  # type: ignore[no-untyped-def]
    """A tag move gives one registry.tag.added with previousImageId, whether the walk
    meets the image that lost it or the one that took it first; and re-tag storms
    give one event per tag change, with the run id."""
    scopes = await folder_scopes(session, upstream)
    await ingest_once(db_pool, client, scopes, page_size=50)
    images = await upstream_images(client, scopes)
    tagged = sorted(i for i, img in images.items() if img.get("tags"))
    by_repo: dict[str, list[str]] = {}
    for image_id in tagged:
        by_repo.setdefault(images[image_id]["name"], []).append(image_id)
    pairs = [(m[0], m[-1]) for m in by_repo.values() if len(m) > 1][:20]
    assert len(pairs) >= 10
    moves = []
    for low, high in pairs:
        # alternate the direction: the walk meets the loser first for some, the taker for others
        source, target = (low, high) if len(moves) % 2 else (high, low)
        tag = images[source]["tags"][0]
        await admin(session, upstream, "POST", f"/images/{target}/tags", {"add": [tag]})
        moves.append((images[source]["name"], tag, target, source))
    async with db_pool.acquire() as conn:
        mark = await conn.fetchval("SELECT max(id) FROM outbox")
    await ingest_once(db_pool, client, scopes, page_size=50)
    async with db_pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT type, key, data::text AS data FROM outbox_events WHERE id > $1 AND topic = 'tags'",
            mark,
        )
        run_ids = {
            str(r["id"])
            for r in await conn.fetch("SELECT id FROM sync_runs WHERE status <> 'running'")
        }
    got = sorted(
        (
            r["type"],
            r["key"],
            orjson.loads(r["data"])["imageId"],
            orjson.loads(r["data"])["previousImageId"],
        )
        for r in rows
    )
    assert got == sorted(
        ("registry.tag.added", f"{repo}:{tag}", target, source)
        for repo, tag, target, source in moves
    )
    assert all(orjson.loads(r["data"])["runId"] in run_ids for r in rows)
