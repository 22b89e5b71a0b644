"""The stats tables naming a repository by its number (sql/114), against real PostgreSQL.

The upgrade keeps every stats row as it was (each name read back through
``stats_repositories``), history included, and the figures served after it are
those a recompute from the images gives; the fold goes on numbering new names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from mirror.model import Scope, ScopeKind
from mirror.stats.queries import fetch_image_usage, fetch_layer_report
from mirror.store.migrate import apply_migrations
from tests.integration.stats_world import IndexWriter, make_image
from tests.postgres_fixture import ROUTINES_113, schema_before, scratch_database

# Each table as it was before sql/114, and as it is after (the name joined back).
BEFORE = {
    "stats_lone_digests": "SELECT digest, repository, size FROM stats_lone_digests",
    "stats_repository_refs": "SELECT digest, repository, refs FROM stats_repository_refs",
    "stats_images": "SELECT image_id, name, blob_rows, layer_count, chain FROM stats_images",
}
AFTER = {
    "stats_lone_digests": "SELECT l.digest, p.name, l.size FROM stats_lone_digests l"
    " JOIN stats_repositories p ON p.id = l.repository_id",
    "stats_repository_refs": "SELECT r.digest, p.name, r.refs FROM stats_repository_refs r"
    " JOIN stats_repositories p ON p.id = r.repository_id",
    "stats_images": "SELECT s.image_id, p.name, s.blob_rows, s.layer_count, s.chain"
    " FROM stats_images s JOIN stats_repositories p ON p.id = s.repository_id",
}
TOTALS = "SELECT * FROM stats_totals ORDER BY scope_key"


async def served(conn: asyncpg.Connection) -> tuple[object, ...]:
    """What the stats readers answer that names repositories (freshness aside)."""
    report = await fetch_layer_report(conn)
    usage = [
        await fetch_image_usage(conn, image_id, Scope(kind, scope))
        for image_id, kind, scope in (
            ("crp1", ScopeKind.REPOSITORY, "rega/app"),
            ("crp4", ScopeKind.REPOSITORY, "regb/lone"),
            ("crp3", ScopeKind.REGISTRY, "regb"),
            ("crp1", ScopeKind.FOLDER, "f1"),
        )
    ]
    return report.layers, usage


async def rows(conn: asyncpg.Connection, queries: dict[str, str]) -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    return {t: sorted(tuple(r) for r in await conn.fetch(q)) for t, q in queries.items()}


@pytest.fixture
async def stats_before_114(postgres_dsn: str, tmp_path: Path) -> AsyncIterator[asyncpg.Connection]:
    """A database migrated up to sql/113, with the stats routines of then."""
    old_sql = schema_before(tmp_path / "sql", 114, routines=ROUTINES_113)
    async with scratch_database(postgres_dsn, "stats_114", sql_dir=old_sql) as conn:
        yield conn


async def test_the_upgrade_keeps_every_row_and_the_fold_numbers_new_names(
    stats_before_114: asyncpg.Connection,
) -> None:
    conn = stats_before_114
    writer = IndexWriter(conn)
    shared, base = ("sha256:" + "5" * 64, 30), ("sha256:" + "b" * 64, 20)
    await writer.set_folder("rega", "f1")
    await writer.push(
        [
            make_image("crp1", "rega/app", ("sha256:" + "c1" * 32, 1), [base, shared]),
            make_image("crp2", "rega/web", ("sha256:" + "c2" * 32, 1), [base]),
            make_image("crp3", "regb/app", None, [shared, ("sha256:" + "e" * 64, 7)]),
            make_image("crp4", "regb/lone", None, [("sha256:" + "f" * 64, 9)]),
        ]
    )
    await writer.settle()
    await writer.delete(["crp2"])  # a repository's count back to 0: history to keep
    await writer.settle()
    before = await rows(conn, BEFORE)
    totals = await conn.fetch(TOTALS)
    assert before["stats_lone_digests"] and before["stats_repository_refs"]
    assert any(r[2] == 0 for r in before["stats_repository_refs"])  # "referenced once"

    await apply_migrations(conn)

    assert await rows(conn, AFTER) == before
    assert await conn.fetch(TOTALS) == totals
    names = await conn.fetch("SELECT id, name FROM stats_repositories ORDER BY id")
    assert [r["name"] for r in names] == ["rega/app", "rega/web", "regb/app", "regb/lone"]
    layers, usage = await served(conn)
    [top] = layers  # the one digest two images hold, in two repositories
    assert top.repositories == ("rega/app", "regb/app") and top.repository_count == 2
    # in its repository, registry or folder, each image holds its layers alone
    assert [u.unique_bytes for u in usage if u is not None] == [51, 9, 37, 51]
    # what a recompute from the images gives, history kept, numbers unchanged
    await conn.execute("SELECT stats_recompute(true)")
    assert await rows(conn, AFTER) == before
    assert await conn.fetch("SELECT id, name FROM stats_repositories ORDER BY id") == names
    assert await served(conn) == (layers, usage)

    # a name the index never had gets the next number; a known one keeps its own
    await writer.push(
        [
            make_image("crp5", "regb/new", None, [shared]),
            make_image("crp6", "rega/app", None, [("sha256:" + "a" * 64, 3)]),
        ]
    )
    await writer.settle()
    after = await conn.fetch("SELECT id, name FROM stats_repositories ORDER BY id")
    assert [tuple(r) for r in after] == [*map(tuple, names), (names[-1]["id"] + 1, "regb/new")]
    repositories = await conn.fetchval(
        "SELECT array_agg(p.name ORDER BY p.name) FROM stats_repository_refs r"
        " JOIN stats_repositories p ON p.id = r.repository_id"
        " WHERE r.digest = mirror_digest_key($1) AND r.refs > 0",
        shared[0],
    )
    assert repositories == ["rega/app", "regb/app", "regb/new"]
