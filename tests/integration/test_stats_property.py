"""Every served dedup figure equals the brute force, over random pushes, re-tags and deletes,
once the change log is folded (also after a fold pass that died mid-batch)."""

from __future__ import annotations

from dataclasses import replace

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirror.model import Image, Scope, ScopeKind
from mirror.stats.folder import fold_once
from mirror.stats.queries import (
    fetch_freshness,
    fetch_image_usage,
    fetch_layer_report,
    fetch_stats,
)
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


async def settle(conn: asyncpg.Connection) -> None:
    """Fold to the end, then check the answers say so: nothing behind, and exact as of
    the newest outbox event."""
    await fold_once(conn, wait=True)
    fresh = await fetch_freshness(conn)
    assert (fresh.pending_changes, fresh.lag_seconds) == (0, 0.0)
    assert fresh.event_id >= await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox")


async def assert_served_equals_reference(
    conn: asyncpg.Connection,
    reference: ReferenceIndex,
    *,
    usage_scopes: bool = True,
    settled: bool = False,
) -> None:
    """Fold to the end (unless ``settled``), then compare every answer with the brute force."""
    if not settled:
        await settle(conn)
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


class FolderCrash(Exception):
    """Raised inside a fold pass's transaction, after the aggregates are written."""


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations, more=operations)
async def test_a_fold_that_dies_mid_batch_is_folded_again_exactly(
    stats_conn: asyncpg.Connection,
    ops: list,  # type: ignore[type-arg]
    more: list,  # type: ignore[type-arg]
) -> None:
    writer = IndexWriter(stats_conn)
    await writer.reset()
    counter = [0]
    await apply(writer, ops, counter)
    await settle(stats_conn)
    scopes = scopes_to_check(writer.reference)
    before = [await fetch_stats(stats_conn, scope) for scope in scopes]
    await apply(writer, more, counter)
    pending = await stats_conn.fetchval("SELECT count(*) FROM stats_changes")
    fired: list[int] = []

    async def crash(conn: asyncpg.Connection) -> None:
        # inside the batch: the log is claimed and the aggregates already hold it all
        fired.append(await conn.fetchval("SELECT count(*) FROM stats_changes"))
        assert await fetch_stats(conn, None) == writer.reference.stats(None)
        raise FolderCrash

    with pytest.raises(FolderCrash):
        await fold_once(stats_conn, before_commit=crash)
    assert fired == [0]  # the hook ran after the batch was claimed and folded
    # rolled back whole: the log is still there, the figures are as before the pass
    assert await stats_conn.fetchval("SELECT count(*) FROM stats_changes") == pending
    assert [await fetch_stats(stats_conn, scope) for scope in scopes] == before
    await assert_served_equals_reference(stats_conn, writer.reference)


async def test_a_folder_killed_mid_batch_loses_nothing(
    stats_conn: asyncpg.Connection, database_url: str
) -> None:
    """The folder's backend is terminated inside its batch: the server rolls it back."""
    writer = IndexWriter(stats_conn)
    await writer.reset()
    await apply(writer, [("push", [(REGISTRIES[0], "app", None, DIGESTS[:3], [])], True)], [0])
    await apply(
        writer, [("push", [(REGISTRIES[1], "app", DIGESTS[4], DIGESTS[:5], [])], False)], [9]
    )
    pending = await stats_conn.fetchval("SELECT count(*) FROM stats_changes")
    assert pending > 0
    folder = await asyncpg.connect(database_url)
    killed: list[bool] = []

    async def kill(conn: asyncpg.Connection) -> None:
        assert (await fetch_stats(conn, None)).images == 2  # folded, not committed
        killed.append(
            await stats_conn.fetchval("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        )
        await conn.fetchval("SELECT 1")  # the connection is gone: this raises

    try:
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await fold_once(folder, before_commit=kill)
    finally:
        await folder.close()
    assert killed == [True]
    assert await stats_conn.fetchval("SELECT count(*) FROM stats_changes") == pending
    assert (await fetch_stats(stats_conn, None)).images == 0
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
    """stats_rebuild() (the repair, and the backfill after sql/080) agrees with the folder,
    what scopes referenced once included; changes still in the log are folded first."""
    writer = IndexWriter(stats_conn)
    await writer.reset()
    half = len(ops) // 2
    await apply(writer, ops[:half], [0])
    await settle(stats_conn)
    await apply(writer, ops[half:], [100])
    await stats_conn.execute("SELECT stats_rebuild()")
    assert await stats_conn.fetchval("SELECT count(*) FROM stats_changes") == 0
    await assert_served_equals_reference(stats_conn, writer.reference, settled=True)


async def test_truncate_recomputes(stats_conn: asyncpg.Connection) -> None:
    """TRUNCATE fires no row triggers: the stats are recomputed from what is left."""
    writer = IndexWriter(stats_conn)
    await writer.reset()
    await apply(writer, [("push", [(REGISTRIES[0], "app", None, DIGESTS[:3], [])], True)], [0])
    await settle(stats_conn)
    assert (await fetch_stats(stats_conn, None)).images == 1
    await stats_conn.execute("TRUNCATE images, blobs")
    await settle(stats_conn)
    empty = ReferenceIndex.of([], folder_of=writer.reference.folder_of)
    for scope in scopes_to_check(writer.reference):
        assert await fetch_stats(stats_conn, scope) == empty.stats(scope), scope
