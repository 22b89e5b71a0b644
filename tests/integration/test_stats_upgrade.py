"""`mirror db upgrade` takes an index whose stats the in-transaction triggers of sql/040-043
kept forward to the folded stats of sql/080 and sql/routines/stats.sql."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from mirror.model import Scope
from mirror.stats.queries import fetch_freshness, fetch_stats
from mirror.store.migrate import SQL_DIR, apply_migrations
from tests.integration.legacy_index import LegacyWriter, old_schema
from tests.integration.stats_world import IndexWriter, make_image
from tests.integration.test_stats_property import assert_served_equals_reference
from tests.postgres_fixture import dsn_with_database, new_database_name

D = [f"sha256:{i:064x}" for i in range(8)]


@pytest.fixture
async def old_index(postgres_dsn: str, tmp_path: Path) -> AsyncIterator[asyncpg.Connection]:
    """A database migrated only up to sql/043 (the in-transaction triggers)."""
    old_sql = old_schema(tmp_path / "sql", 43, routines=False)
    name = new_database_name("upgrade")
    admin = await asyncpg.connect(postgres_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(dsn_with_database(postgres_dsn, name))
    try:
        await apply_migrations(conn, old_sql)
        assert await conn.fetchval("SELECT to_regclass('stats_changes') IS NULL")
        yield conn
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_upgrade_recomputes_and_keeps_what_scopes_referenced_once(
    old_index: asyncpg.Connection,
) -> None:
    writer = LegacyWriter(old_index)  # image_blobs rows: the schema before sql/090
    base = make_image("crp00000000000000001", "crpreg1/base", (D[0], 10), [(D[1], 100)])
    app = make_image("crp00000000000000002", "crpreg1/app", (D[2], 10), [(D[1], 100), (D[3], 30)])
    other = make_image("crp00000000000000003", "crpreg2/app", (D[4], 10), [(D[5], 70)])
    lone = make_image("crp00000000000000004", "crpreg2/lone", None, [(D[6], 5)])
    await writer.push([base, app], folder_id="b1gfolder1")
    await writer.push([other, lone])
    await writer.set_folder("crpreg2", "b1gfolder2")
    await writer.delete([app.id, other.id])  # reclaimable history, per scope
    old = await fetch_stats_old(old_index)

    applied = await apply_migrations(old_index, SQL_DIR)
    assert [step.name for step in applied][-1] == "stats"
    assert not await old_index.fetchval(
        "SELECT count(*) FROM pg_trigger WHERE tgname IN ('stats_image_blobs_insert', "
        "'stats_images_insert', 'stats_blobs_update')"
    )
    # recomputed during the upgrade: exact at once, nothing pending
    fresh = await fetch_freshness(old_index)
    assert fresh.pending_changes == 0
    assert await old_index.fetchval("SELECT rebuild_pending FROM stats_folded") is False
    whole = await fetch_stats(old_index, None)
    assert (whole.images, whole.reclaimable_blobs) == (old["all"][0], old["all"][1])
    assert whole.reclaimable_blobs == 4  # app's config and D3, other's config and D5
    await assert_served_equals_reference(old_index, writer.reference, settled=True)

    # and the folder takes it from there
    await IndexWriter(old_index, writer.reference).push([app])
    await assert_served_equals_reference(old_index, writer.reference)
    folder = await fetch_stats(old_index, Scope.parse("folder:b1gfolder2"))
    assert (folder.images, folder.reclaimable_blobs) == (1, 2)


async def fetch_stats_old(conn: asyncpg.Connection) -> dict[str, tuple[int, int]]:
    """The whole index's images and reclaimable blobs as the old triggers kept them."""
    rows = await conn.fetch(
        "SELECT scope_key, sum(images) AS images, sum(reclaimable_blobs) AS reclaimable FROM "
        "(SELECT scope_key, images, reclaimable_blobs FROM stats_totals UNION ALL "
        "SELECT scope_key, images, reclaimable_blobs FROM stats_totals_pending) t "
        "WHERE scope_key = 'all' GROUP BY scope_key"
    )
    return {r["scope_key"]: (r["images"], r["reclaimable"]) for r in rows}
