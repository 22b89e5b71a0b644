"""The real ingest (walks, page merge, deletion confirmation) keeps the stats exact.

Random pushes, re-tags and deletes happen upstream (the ingest tests' fake
upstream); after each step ``ingest_once`` walks folders or registries, and
every served figure must equal the brute force over the images the index holds
(and every image it ever held, for the reclaimable blobs).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirror.ingest.loop import ingest_once
from mirror.model import Image, Scope
from mirror.stats.reference import ReferenceIndex
from mirror.upstream.client import UpstreamClient
from tests.integration.ingest_fake_upstream import FakeUpstream, fast_client, serving
from tests.integration.test_stats_property import assert_served_equals_reference

FOLDERS = {"reg1": "f1", "reg2": "f1", "reg3": "f2"}
FOLDER_SCOPES = [Scope.parse("folder:f1"), Scope.parse("folder:f2")]
REGISTRY_SCOPES = [Scope.parse(f"registry:{r}") for r in FOLDERS]
LAYERS = [f"sha256:a{x:063x}" for x in range(10)]


def upstream_image(
    n: int, registry: str, repo: str, layers: list[int], tags: list[str]
) -> dict[str, Any]:
    return {
        "id": f"crp{n:017d}",
        "name": f"{registry}/{repo}",
        "digest": f"sha256:{n:064x}",
        "compressedSize": str(sum(900 + x for x in layers)),
        # configs repeat too (the same image pushed to two repositories shares its config)
        "config": {
            "id": f"cfg-{registry}-{n % 4}",
            "digest": f"sha256:c{n % 4:063x}",
            "size": "1234",
        },
        # blob ids are per registry: the same digest, another id (invariant 4)
        "layers": [
            {"id": f"{registry}-l{x}", "digest": LAYERS[x], "size": str(1000 + 7 * x)}
            for x in layers
        ],
        "tags": tags,
        "createdAt": "2024-01-01T10:00:00.123456789Z",
    }


steps = st.lists(
    st.tuples(
        st.lists(  # pushes
            st.tuples(
                st.sampled_from(sorted(FOLDERS)),
                st.sampled_from(["app", "base/os"]),
                st.lists(st.integers(0, len(LAYERS) - 1), max_size=4),
            ),
            max_size=5,
        ),
        st.lists(st.integers(0, 99), max_size=2),  # deletes (indexes into current images)
        st.lists(st.integers(0, 99), max_size=2),  # re-tags
        st.booleans(),  # walk folders (True) or registries (False)
    ),
    min_size=1,
    max_size=4,
)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with serving(FakeUpstream(folders=dict(FOLDERS))) as fake:
        yield fake


@pytest.fixture
async def client(upstream: FakeUpstream) -> AsyncIterator[UpstreamClient]:
    async with fast_client(upstream.url) as upstream_client:
        yield upstream_client


RESET = """
TRUNCATE images, blobs, registries, scopes, sync_runs, outbox,
         stats_registry_folders, stats_images, stats_registry_refs, stats_folder_refs,
         stats_repository_refs, stats_totals, stats_changes, stats_lone_digests
"""


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=steps)
async def test_figures_after_real_ingest_equal_brute_force(
    db_pool: asyncpg.Pool,
    upstream: FakeUpstream,
    client: UpstreamClient,
    plan: list,  # type: ignore[type-arg]
) -> None:
    async with db_pool.acquire() as conn:
        await conn.execute(RESET)
    upstream.images.clear()
    history: dict[str, Image] = {}
    n = 0
    for pushes, deletes, retags, by_folder in plan:
        for registry, repo, layers in pushes:
            n += 1
            upstream.put(upstream_image(n, registry, repo, layers, [f"v{n}"]))
        current = sorted(upstream.images)
        for i in deletes:
            if current:
                upstream.delete(current[i % len(current)])
        current = sorted(upstream.images)
        for i in retags:
            if current:
                upstream.images[current[i % len(current)]]["tags"] = ["latest"]
        summary = await ingest_once(
            db_pool, client, FOLDER_SCOPES if by_folder else REGISTRY_SCOPES, page_size=3
        )
        assert not summary.failed and not summary.errors, summary.to_json()
        # the brute force works on what the index holds (which images a walk may delete
        # is the ingest's business; e.g. a folder walk leaves an image it cannot place)
        history.update(await indexed_images(db_pool))

    async with db_pool.acquire() as conn:
        folder_of = dict(await conn.fetch("SELECT registry_id, folder_id FROM registries"))
        current = await indexed_images(db_pool)
        assert set(current) <= set(upstream.images) | set(history)
        reference = ReferenceIndex.of(current.values(), history.values(), folder_of)
        await assert_served_equals_reference(conn, reference, usage_scopes=False)


async def indexed_images(pool: asyncpg.Pool) -> dict[str, Image]:
    rows = await pool.fetch("SELECT image_doc(images) AS doc FROM images")
    return {i.id: i for i in (Image.from_json(orjson.loads(r["doc"])) for r in rows)}
