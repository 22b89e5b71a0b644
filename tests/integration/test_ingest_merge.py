"""The page merge against real PostgreSQL: rows, ref counts and events of each kind of change."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from mirror.ingest.merge import PageWriter, delete_images
from mirror.ingest.staging import page_images
from tests.integration.refcounts import BLOB_REFERENCES, REF_COUNT_MISMATCHES


def img(
    n: int,
    *,
    tags: tuple[str, ...] = ("latest",),
    layers: tuple[int, ...] = (1, 2),
    registry: str = "reg1",
) -> dict[str, Any]:
    return {
        "id": f"crp{n:017d}",
        "name": f"{registry}/app{n % 3}",
        "digest": f"sha256:{n:064x}",
        "compressedSize": str(100 * len(layers)),
        "config": {"id": f"cfg{n}", "digest": f"sha256:c{n:063x}", "size": "10"},
        "layers": [
            {"id": f"l{registry}{x}", "digest": f"sha256:1{x:063x}", "size": "100"} for x in layers
        ],
        "tags": list(tags),
        "createdAt": "2024-05-06T07:08:09.123456789Z",
    }


async def outbox(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    return [
        (r["type"], r["key"])
        for r in await conn.fetch("SELECT type, key FROM outbox_events ORDER BY id")
    ]


async def test_first_merge_creates_images_blobs_and_events(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        writer = PageWriter(conn, folder_id="f1")
        await writer.prepare()
        images = [img(1), img(2, layers=(2, 3))]
        result = await writer.apply(page_images(images))
        assert (result.created, result.updated, result.blobs_added) == (2, 0, 5)
        row = await conn.fetchrow(
            "SELECT image_doc(images) AS doc, folder_id, r.name AS registry_id FROM images"
            " JOIN image_registries AS r ON r.id = images.registry WHERE images.id = $1",
            images[0]["id"],
        )
        assert orjson.loads(row["doc"]) == images[0]
        assert row["doc"].encode() == orjson.dumps(images[0])
        assert (row["folder_id"], row["registry_id"]) == ("f1", "reg1")
        refs = dict(await conn.fetch("SELECT mirror_digest_text(digest), ref_count FROM blobs"))
        assert refs[f"sha256:1{2:063x}"] == 2 and refs[f"sha256:1{3:063x}"] == 1
        assert await conn.fetchval(BLOB_REFERENCES) == 6
        events = await outbox(conn)
        assert [t for t, _ in events].count("registry.image.created") == 2
        assert [t for t, _ in events].count("registry.blob.added") == 5
        assert (
            await conn.fetchval("SELECT folder_id FROM registries WHERE registry_id = 'reg1'")
            == "f1"
        )

        # the same page again: nothing written
        before = await conn.fetchval("SELECT count(*) FROM outbox")
        again = await writer.apply(page_images(images))
        assert (again.created, again.updated, again.events) == (0, 0, [])
        assert await conn.fetchval("SELECT count(*) FROM outbox") == before

        # re-tag one, change the layers of the other
        changed = [img(1, tags=("latest", "v2")), img(2, layers=(3, 4))]
        result = await writer.apply(page_images(changed))
        assert (result.created, result.updated) == (0, 2)
        new_events = (await outbox(conn))[before:]
        types = [t for t, _ in new_events]
        assert types.count("registry.image.updated") == 2
        assert ("registry.blob.added", f"sha256:1{4:063x}") in new_events
        # layer 2 is still referenced by image 1: not orphaned
        assert "registry.blob.orphaned" not in types
        data = await conn.fetchval(
            "SELECT data::text FROM outbox_events WHERE type = 'registry.image.updated' AND key = $1",
            changed[0]["id"],
        )
        assert orjson.loads(data)["changes"] == {
            "tagsAdded": ["v2"],
            "tagsRemoved": [],
            "fields": ["tags"],
        }
        refs = dict(await conn.fetch("SELECT mirror_digest_text(digest), ref_count FROM blobs"))
        assert refs[f"sha256:1{2:063x}"] == 1 and refs[f"sha256:1{4:063x}"] == 1
        assert refs[f"sha256:1{3:063x}"] == 1

        async with conn.transaction():
            deleted = await delete_images(
                conn, [changed[1]["id"], "crp-not-indexed"], "upstream-gone"
            )
        assert deleted.deleted == 1
        types = [(t, k) for t, k in (await outbox(conn))]
        assert ("registry.image.deleted", changed[1]["id"]) in types
        assert ("registry.blob.orphaned", f"sha256:1{4:063x}") in types
        assert ("registry.blob.orphaned", f"sha256:1{3:063x}") in types
        data = await conn.fetchval(
            "SELECT data::text FROM outbox_events WHERE type = 'registry.image.deleted'"
        )
        assert orjson.loads(data) == {"image": changed[1], "reason": "upstream-gone"}
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM blobs WHERE ref_count = 0 AND orphaned_at IS NOT NULL"
            )
            == 3
        )
        # ref_count is the number of blob references of images, always
        mismatch = await conn.fetchval(REF_COUNT_MISMATCHES)
        assert mismatch == 0
        await writer.close()
