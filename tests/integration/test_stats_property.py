"""Every served dedup figure equals the brute force, over random pushes, re-tags and deletes."""

from __future__ import annotations

from dataclasses import replace

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirror.model import Image, Scope, ScopeKind
from mirror.stats.queries import fetch_image_usage, fetch_layer_report, fetch_stats
from mirror.stats.reference import ReferenceIndex
from tests.integration.stats_world import IndexWriter, make_image

BIG = 10_000

# A small universe: digests with sizes fixed by the digest (content addressing),
# a few base stacks so lineage has something to find.
DIGESTS = [f"sha256:{i:064x}" for i in range(1, 15)]
SIZE = {d: 1000 * (i + 1) + i * i for i, d in enumerate(DIGESTS)}
STACKS = [DIGESTS[0:4], DIGESTS[0:2] + DIGESTS[4:6], DIGESTS[6:9]]
REGISTRIES = ["crpregistry0000000001", "crpregistry0000000002", "crpregistry0000000003"]
FOLDERS = {REGISTRIES[0]: "b1gfolder01", REGISTRIES[1]: "b1gfolder01", REGISTRIES[2]: "b1gfolder02"}
REPOS = ["app", "base/python"]


def scopes_to_check(reference: ReferenceIndex) -> list[Scope | None]:
    registries = {image.registry_id for image in reference.history.values()}
    repositories = {image.name for image in reference.history.values()}
    folders = set(reference.folder_of.values()) | {"b1gnosuchfolder"}
    return [
        None,
        *(Scope(ScopeKind.FOLDER, f) for f in sorted(folders)),
        *(Scope(ScopeKind.REGISTRY, r) for r in sorted(registries)),
        *(Scope(ScopeKind.REPOSITORY, p) for p in sorted(repositories)),
    ]


async def assert_served_equals_reference(
    conn: asyncpg.Connection, reference: ReferenceIndex, *, usage_scopes: bool = True
) -> None:
    for scope in scopes_to_check(reference):
        assert await fetch_stats(conn, scope) == reference.stats(scope), scope

    report = await fetch_layer_report(conn, limit=BIG, reclaimable_limit=BIG)
    assert list(report.layers) == reference.layers(BIG, 10)
    served_reclaimable = [replace(blob, orphaned_at="") for blob in report.reclaimable]
    assert served_reclaimable == reference.reclaimable(BIG)
    assert all(blob.orphaned_at for blob in report.reclaimable)
    whole = reference.stats(None)
    assert (report.reclaimable_blobs, report.reclaimable_bytes) == (
        whole.reclaimable_blobs,
        whole.reclaimable_bytes,
    )
    # Σ per-layer saved = logical − stored
    assert sum(layer.saved_bytes for layer in report.layers) == whole.saved_bytes

    for image in reference.images.values():
        scopes: list[Scope | None] = [None]
        if usage_scopes:
            scopes += [
                Scope(ScopeKind.REGISTRY, image.registry_id),
                Scope(ScopeKind.REPOSITORY, image.name),
                Scope(ScopeKind.REGISTRY, REGISTRIES[0]),
            ]
            if image.registry_id in reference.folder_of:
                scopes.append(Scope(ScopeKind.FOLDER, reference.folder_of[image.registry_id]))
        for scope in scopes:
            served = await fetch_image_usage(conn, image.id, scope, related_limit=BIG)
            assert served == reference.usage(image.id, scope, BIG), (image.id, scope)
        # a small limit cuts the same lists at the same place (pages of candidates)
        served = await fetch_image_usage(conn, image.id, None, related_limit=2)
        assert served == reference.usage(image.id, None, 2), image.id
    assert await fetch_image_usage(conn, "crpnosuchimage000000") is None


# -- strategies ----------------------------------------------------------------

layer_lists = st.one_of(
    # a base stack's prefix, then some layers of the image's own
    st.builds(
        lambda stack, cut, extra: STACKS[stack][:cut] + extra,
        st.integers(0, len(STACKS) - 1),
        st.integers(0, 4),
        st.lists(st.sampled_from(DIGESTS), max_size=3),
    ),
    st.lists(st.sampled_from(DIGESTS), max_size=4),
)

new_images = st.builds(
    lambda registry, repo, config, layers, tags: (registry, repo, config, layers, tags),
    st.sampled_from(REGISTRIES),
    st.sampled_from(REPOS),
    st.one_of(st.none(), st.sampled_from(DIGESTS)),
    layer_lists,
    st.lists(st.sampled_from(["latest", "v1", "v2"]), unique=True, max_size=2),
)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.lists(new_images, min_size=1, max_size=4), st.booleans()),
        st.tuples(st.just("delete"), st.lists(st.integers(0, 50), min_size=1, max_size=3)),
        st.tuples(st.just("retag"), st.integers(0, 50), st.sampled_from([(), ("latest",)])),
        st.tuples(st.just("folder"), st.sampled_from(REGISTRIES)),
    ),
    min_size=1,
    max_size=12,
)


async def apply(writer: IndexWriter, ops: list[tuple], counter: list[int]) -> None:  # type: ignore[type-arg]
    for op in ops:
        current = sorted(writer.reference.images)
        if op[0] == "push":
            _, specs, with_folder = op
            batch: list[Image] = []
            for registry, repo, config, layers, tags in specs:
                counter[0] += 1
                batch.append(
                    make_image(
                        f"crp{counter[0]:017d}",
                        f"{registry}/{repo}",
                        (config, SIZE[config]) if config else None,
                        [(d, SIZE[d]) for d in layers],
                        tags,
                    )
                )
            # a folder walk sees one registry's images with their folder id
            registry = batch[0].registry_id
            batch = [i for i in batch if i.registry_id == registry] if with_folder else batch
            await writer.push(batch, FOLDERS[registry] if with_folder else None)
        elif op[0] == "delete" and current:
            await writer.delete(sorted({current[i % len(current)] for i in op[1]}))
        elif op[0] == "retag" and current:
            await writer.retag(current[op[1] % len(current)], op[2])
        elif op[0] == "folder":
            await writer.set_folder(op[1], FOLDERS[op[1]])


@pytest.fixture
async def stats_conn(db_pool: asyncpg.Pool):  # type: ignore[no-untyped-def]
    async with db_pool.acquire() as conn:
        yield conn


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
async def test_every_figure_equals_brute_force(stats_conn: asyncpg.Connection, ops: list) -> None:  # type: ignore[type-arg]
    writer = IndexWriter(stats_conn)
    await writer.reset()
    await apply(writer, ops, [0])
    await assert_served_equals_reference(stats_conn, writer.reference)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
async def test_rebuild_recomputes_the_same_figures(
    stats_conn: asyncpg.Connection,
    ops: list,  # type: ignore[type-arg]
) -> None:
    """stats_rebuild() (the migration's backfill) agrees with the triggers, history aside."""
    writer = IndexWriter(stats_conn)
    await writer.reset()
    await apply(writer, ops, [0])
    await stats_conn.execute("SELECT stats_rebuild()")
    # the rebuild cannot know what a scope referenced before: history = what is there now,
    # except the whole index, whose orphaned rows stay in blobs
    rebuilt = ReferenceIndex.of(
        writer.reference.images.values(), folder_of=writer.reference.folder_of
    )
    for scope in scopes_to_check(writer.reference):
        expected = (writer.reference if scope is None else rebuilt).stats(scope)
        assert await fetch_stats(stats_conn, scope) == expected, scope


async def test_truncate_recomputes(stats_conn: asyncpg.Connection) -> None:
    """TRUNCATE fires no row triggers: the stats are recomputed from what is left."""
    writer = IndexWriter(stats_conn)
    await writer.reset()
    await apply(writer, [("push", [(REGISTRIES[0], "app", None, DIGESTS[:3], [])], True)], [0])
    assert (await fetch_stats(stats_conn, None)).images == 1
    await stats_conn.execute("TRUNCATE images, image_blobs, blobs")
    empty = ReferenceIndex.of([], folder_of=writer.reference.folder_of)
    for scope in scopes_to_check(writer.reference):
        assert await fetch_stats(stats_conn, scope) == empty.stats(scope), scope
