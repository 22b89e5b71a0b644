"""Lone digests kept one row a digest by a hash index (sql/115), against real PostgreSQL.

The upgrade keeps every row; the fold goes on promoting a lone digest a second
image brings (found through the new index); a second row for a digest is refused.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from mirror.store.migrate import apply_migrations
from tests.integration.stats_world import IndexWriter, make_image
from tests.postgres_fixture import schema_before, scratch_database

LONE = (
    "SELECT mirror_digest_text(l.digest), p.name, l.size FROM stats_lone_digests l"
    " JOIN stats_repositories p ON p.id = l.repository_id ORDER BY 1"
)
CONSTRAINTS = """
SELECT c.conname, c.contype::text, pg_get_constraintdef(c.oid)
FROM pg_constraint c
WHERE c.conrelid = 'stats_lone_digests'::regclass AND c.contype IN ('p', 'u', 'x')
"""


async def test_the_upgrade_keeps_the_rows_and_a_digest_stays_one_row(
    postgres_dsn: str, tmp_path: Path
) -> None:
    old_sql = schema_before(tmp_path / "sql", 115)
    async with scratch_database(postgres_dsn, "lone_115", sql_dir=old_sql) as conn:
        writer = IndexWriter(conn)
        shared = ("sha256:" + "5" * 64, 30)
        own = ("sha256:" + "a" * 64, 7)
        other = ("sha256:" + "b" * 64, 9)
        await writer.push(
            [
                make_image("crp1", "rega/app", None, [shared, own]),
                make_image("crp2", "rega/web", None, [other]),
            ]
        )
        await writer.settle()
        before = [tuple(r) for r in await conn.fetch(LONE)]
        assert before == [
            (shared[0], "rega/app", 30),
            (own[0], "rega/app", 7),
            (other[0], "rega/web", 9),
        ]
        [(name, kind, _)] = await conn.fetch(CONSTRAINTS)
        assert (name, kind) == ("stats_lone_digests_pkey", "p")

        await apply_migrations(conn)

        assert [tuple(r) for r in await conn.fetch(LONE)] == before
        [(name, kind, definition)] = await conn.fetch(CONSTRAINTS)
        assert (name, kind) == ("stats_lone_digests_digest", "x")
        assert definition == "EXCLUDE USING hash (digest WITH =)"

        # a second image brings `shared`: the fold finds its lone row and moves it
        await writer.push([make_image("crp3", "regb/app", None, [shared])])
        await writer.settle()
        assert [tuple(r) for r in await conn.fetch(LONE)] == before[1:]
        refs = await conn.fetch(
            "SELECT p.name, r.refs FROM stats_repository_refs r"
            " JOIN stats_repositories p ON p.id = r.repository_id"
            " WHERE r.digest = mirror_digest_key($1) ORDER BY 1",
            shared[0],
        )
        assert [tuple(r) for r in refs] == [("rega/app", 1), ("regb/app", 1)]

        with pytest.raises(asyncpg.ExclusionViolationError):
            await conn.execute(
                "INSERT INTO stats_lone_digests (digest, repository_id, size)"
                " SELECT digest, repository_id, size FROM stats_lone_digests LIMIT 1"
            )
