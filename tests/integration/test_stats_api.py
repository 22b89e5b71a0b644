"""The /mirror/v1 stats endpoints through the API app: JSON shape, scope precedence, validation,
errors (the upstream's error JSON), and invariant 4."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from mirror.api.app import create_app
from mirror.model import Scope
from mirror.settings import Settings
from mirror.stats.queries import fetch_image_usage, fetch_layer_report, fetch_stats
from tests.integration.stats_world import IndexWriter, make_image

D = [f"sha256:{i:064x}" for i in range(10)]
BASE = make_image(
    "crp00000000000000001", "crpreg1/base", (D[0], 10), [(D[1], 100), (D[2], 200)], ["latest"]
)
APP = make_image(
    "crp00000000000000002",
    "crpreg1/app",
    (D[3], 10),
    [(D[1], 100), (D[2], 200), (D[4], 50)],
    ["v1"],
)
OTHER = make_image("crp00000000000000003", "crpreg2/app", (D[3], 10), [(D[1], 100), (D[5], 70)])


@pytest.fixture
async def api(
    db_pool: asyncpg.Pool, settings: Settings
) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with db_pool.acquire() as conn:
        writer = IndexWriter(conn)
        await writer.push([BASE, APP])
        await writer.push([OTHER], folder_id="b1gfolder2")
        await writer.set_folder("crpreg1", "b1gfolder1")
        await writer.delete([APP.id])
        await writer.push([APP])
        await writer.settle()
    server = TestServer(create_app(settings, pool=db_pool), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield session, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def get(api: tuple[aiohttp.ClientSession, str], path: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    session, base = api
    async with session.get(base + path) as response:
        return response.status, await response.json()


async def test_whole_index_stats_shape(api) -> None:  # type: ignore[no-untyped-def]
    status, body = await get(api, "/mirror/v1/stats")
    assert status == 200
    as_of, behind = body.pop("asOf"), body.pop("behind")
    assert as_of["eventId"] == "0" and as_of["time"].endswith("Z")  # no outbox event yet
    assert behind == {"changes": "0", "seconds": 0}
    # blobs: D0..D5 (6 digests); logical 310 + 360 + 180 = 850; stored 10+100+200+10+50+70 = 440
    assert body == {
        "scope": "all",
        "images": "3",
        "blobs": "6",
        "logicalBytes": "850",
        "compressedBytes": "820",
        "storedBytes": "440",
        "savedBytes": "410",
        "dedupRatio": 850 / 440,
        "reclaimableBlobs": "0",
        "reclaimableBytes": "0",
    }


@pytest.mark.synthetic_events  # a hand-made outbox row stands for the change's event
async def test_a_change_is_behind_until_folded(api, db_pool: asyncpg.Pool) -> None:  # type: ignore[no-untyped-def]
    _, before = await get(api, "/mirror/v1/stats")
    more = make_image("crp00000000000000009", "crpreg2/more", None, [(D[6], 9)])
    async with db_pool.acquire() as conn:
        writer = IndexWriter(conn)
        await writer.push([more])
        await conn.execute(
            "INSERT INTO outbox (key, type_code, other_source, data) "
            "VALUES ($1, 2, 'test', '{}')",  # registry.image.updated (sql/096)
            more.id,
        )
        event = await conn.fetchval("SELECT max(id) FROM outbox")
        _, lagging = await get(api, "/mirror/v1/stats")
        assert lagging["images"] == before["images"] == "3"  # as of the last fold
        assert lagging["asOf"] == before["asOf"]
        # one log row: the image with its blob references (sql/090)
        assert int(lagging["behind"]["changes"]) == 1
        assert lagging["behind"]["seconds"] >= 0
        assert await writer.settle() == 1
    _, caught_up = await get(api, "/mirror/v1/stats")
    assert caught_up["images"] == "4"
    assert caught_up["asOf"]["eventId"] == str(event)
    assert caught_up["behind"] == {"changes": "0", "seconds": 0}
    for path in ("/mirror/v1/stats/layers", f"/mirror/v1/images/{BASE.id}/usage"):
        _, other = await get(api, path)
        assert other["asOf"] == caught_up["asOf"], path


async def test_scope_precedence_repository_then_registry_then_folder(api) -> None:  # type: ignore[no-untyped-def]
    _, repo = await get(
        api, "/mirror/v1/stats?folderId=b1gfolder2&registryId=crpreg2&repositoryName=crpreg1/app"
    )
    assert (repo["scope"], repo["images"], repo["logicalBytes"]) == (
        "repository:crpreg1/app",
        "1",
        "360",
    )
    _, registry = await get(api, "/mirror/v1/stats?folderId=b1gfolder2&registryId=crpreg1")
    assert (registry["scope"], registry["images"], registry["storedBytes"]) == (
        "registry:crpreg1",
        "2",
        "370",
    )
    _, folder = await get(api, "/mirror/v1/stats?folderId=b1gfolder2&registryId=")
    assert (folder["scope"], folder["images"], folder["storedBytes"]) == (
        "folder:b1gfolder2",
        "1",
        "180",
    )
    _, unknown = await get(api, "/mirror/v1/stats?folderId=b1gnothing")
    assert unknown["images"] == "0" and unknown["dedupRatio"] == 1.0


@pytest.mark.parametrize(
    "query",
    [
        "registryId=" + "r" * 51,
        "folderId=" + "f" * 51 + "&repositoryName=crpreg1/app",  # ignored, still validated
        "repositoryName=Not_A_Name",
        "registryId=a&registryId=b",
    ],
)
async def test_invalid_scope_is_invalid_argument(api, query: str) -> None:  # type: ignore[no-untyped-def]
    status, body = await get(api, "/mirror/v1/stats?" + query)
    assert status == 400
    assert body["code"] == 3 and body["message"].startswith("invalid ")
    assert body["details"][0]["@type"] == "type.googleapis.com/google.rpc.RequestInfo"
    assert body["details"][0]["requestId"]


async def test_layers_most_saved_first_with_limit(api) -> None:  # type: ignore[no-untyped-def]
    status, body = await get(api, "/mirror/v1/stats/layers")
    assert status == 200
    assert [(x["digest"], x["refCount"], x["savedBytes"]) for x in body["layers"]] == [
        (D[1], "3", "200"),
        (D[2], "2", "200"),
        (D[3], "2", "10"),
    ]
    assert body["layers"][0]["repositories"] == ["crpreg1/app", "crpreg1/base", "crpreg2/app"]
    assert body["layers"][0]["repositoryCount"] == "3"
    assert (body["reclaimableBlobs"], body["reclaimableBytes"]) == ("0", "0")
    assert "reclaimable" not in body  # empty lists are omitted, as upstream
    _, one = await get(api, "/mirror/v1/stats/layers?limit=1")
    assert len(one["layers"]) == 1
    for bad in ("limit=-1", "limit=1001", "limit=ten", "limit=1&limit=2"):
        status, error = await get(api, "/mirror/v1/stats/layers?" + bad)
        assert status == 400 and error["code"] == 3


async def test_reclaimable_after_delete(api, db_pool: asyncpg.Pool) -> None:  # type: ignore[no-untyped-def]
    async with db_pool.acquire() as conn:
        writer = IndexWriter(conn)
        await writer.delete([OTHER.id])
        await writer.settle()
    _, body = await get(api, "/mirror/v1/stats/layers")
    assert body["reclaimable"] == [
        {"digest": D[5], "size": "70", "orphanedAt": body["reclaimable"][0]["orphanedAt"]}
    ]
    assert body["reclaimable"][0]["orphanedAt"].endswith("Z")
    _, folder = await get(api, "/mirror/v1/stats?folderId=b1gfolder2")
    assert (folder["images"], folder["reclaimableBlobs"], folder["reclaimableBytes"]) == (
        "0",
        "3",
        "180",
    )


async def test_image_usage_and_lineage(api) -> None:  # type: ignore[no-untyped-def]
    status, body = await get(api, f"/mirror/v1/images/{BASE.id}/usage")
    assert status == 200
    assert set(body.pop("asOf")) == {"eventId", "time"} and body.pop("behind")
    assert body == {
        "imageId": BASE.id,
        "scope": "all",
        "uniqueBytes": "10",  # its config
        "sharedBytes": "300",
        "derivedImages": [
            {
                "id": APP.id,
                "name": "crpreg1/app",
                "digest": APP.digest,
                "tags": ["v1"],
                "layerCount": "3",
            }
        ],
    }
    _, app = await get(api, f"/mirror/v1/images/{APP.id}/usage")
    assert [x["id"] for x in app["baseImages"]] == [BASE.id]
    assert (app["uniqueBytes"], app["sharedBytes"]) == ("50", "310")
    # within its repository nothing else shares its blobs
    _, alone = await get(api, f"/mirror/v1/images/{APP.id}/usage?repositoryName=crpreg1/app")
    assert (alone["uniqueBytes"], alone["sharedBytes"]) == ("360", "0")
    assert "baseImages" not in alone


async def test_unknown_image_is_not_found_in_upstream_format(api) -> None:  # type: ignore[no-untyped-def]
    status, body = await get(api, "/mirror/v1/images/crpnosuchimage000000/usage")
    assert status == 404
    assert body["code"] == 5 and body["message"] == "Image crpnosuchimage000000 not found"
    assert body["details"][0]["@type"] == "type.googleapis.com/google.rpc.RequestInfo"
    status, body = await get(api, "/mirror/v1/images/" + "x" * 51 + "/usage")
    assert status == 400 and body["code"] == 3


async def test_invariant_4_dedup_by_digest_not_blob_id(db_pool: asyncpg.Pool) -> None:
    """One digest, a different blob id in each registry: stored once, shared across registries."""
    shared = ("sha256:" + "ab" * 32, 5000)
    a = make_image("crp00000000000000011", "crpreg1/app", None, [shared])
    b = make_image("crp00000000000000012", "crpreg2/app", None, [shared])
    assert a.layers[0].id != b.layers[0].id and a.layers[0].digest == b.layers[0].digest
    async with db_pool.acquire() as conn:
        writer = IndexWriter(conn)
        await writer.push([a])
        await writer.push([b])
        await writer.set_folder("crpreg1", "b1gfolder")
        await writer.set_folder("crpreg2", "b1gfolder")
        await writer.settle()
        whole = await fetch_stats(conn, None)
        folder = await fetch_stats(conn, Scope.parse("folder:b1gfolder"))
        for stats in (whole, folder):
            assert (stats.blobs, stats.logical_bytes, stats.stored_bytes) == (1, 10000, 5000)
            assert stats.dedup_ratio == 2.0
        registry = await fetch_stats(conn, Scope.parse("registry:crpreg1"))
        assert (registry.blobs, registry.stored_bytes) == (1, 5000)
        usage = await fetch_image_usage(conn, a.id)
        assert usage is not None and (usage.unique_bytes, usage.shared_bytes) == (0, 5000)
        in_registry = await fetch_image_usage(conn, a.id, Scope.parse("registry:crpreg1"))
        assert in_registry is not None and in_registry.unique_bytes == 5000
        report = await fetch_layer_report(conn)
        assert [(x.digest, x.ref_count, x.saved_bytes) for x in report.layers] == [
            (shared[0], 2, 5000)
        ]
        assert report.layers[0].repositories == ("crpreg1/app", "crpreg2/app")
