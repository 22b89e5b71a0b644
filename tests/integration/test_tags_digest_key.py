"""A tag row's digest stored as its key (sql/108), against real PostgreSQL.

The upgrade turns every stored digest into its key and the ingest's reads give
back the same text: a sha256 as its 32 bytes, any other text losslessly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from mirror.ingest.tags import SELECT_TAGS, TagRef, tag_changes, tags_of_deleted
from mirror.model import digest_key
from mirror.store.migrate import apply_migrations
from tests.postgres_fixture import ROUTINES_113, schema_before, scratch_database

SHA = "sha256:" + "0f" * 32
DIGESTS = [SHA, "sha256:" + "0F" * 32, "sha512:" + "ab" * 64, "", "é"]


@pytest.fixture
async def tags_before_108(postgres_dsn: str, tmp_path: Path) -> AsyncIterator[asyncpg.Connection]:
    """A database migrated up to the last migration before sql/108 (text digests)."""
    old_sql = schema_before(tmp_path / "sql", 108, routines=ROUTINES_113)
    async with scratch_database(postgres_dsn, "tags_108", sql_dir=old_sql) as conn:
        yield conn


async def test_upgrade_keeps_every_digest_and_the_ingest_reads_them_back(
    tags_before_108: asyncpg.Connection,
) -> None:
    conn = tags_before_108
    await conn.executemany(
        "INSERT INTO tags (repository, tag, image_id, digest) VALUES ('reg/app', $1, $2, $3)",
        [(f"t{n}", f"crp{n}", d) for n, d in enumerate(DIGESTS)],
    )
    await apply_migrations(conn)

    stored = await conn.fetch("SELECT tag, digest FROM tags ORDER BY tag")
    assert [r["digest"] for r in stored] == [digest_key(d) for d in DIGESTS]
    assert len(stored[0]["digest"]) == 32
    tags = [f"t{n}" for n in range(len(DIGESTS))]
    rows = await conn.fetch(SELECT_TAGS, ["reg/app"] * len(tags), tags)
    assert sorted((r["tag"], r["digest"]) for r in rows) == list(zip(tags, DIGESTS, strict=True))

    # written by the ingest and read back the same way, removal events included
    async with conn.transaction():
        claims = [TagRef("reg/app", f"new{n}", f"crpnew{n}", d) for n, d in enumerate(DIGESTS)]
        added = await tag_changes(conn, claims, [], "/registry-mirror/ingest")
    assert [e.data["digest"] for e in added] == DIGESTS
    async with conn.transaction():
        removed = await tags_of_deleted(
            conn, {f"crpnew{n}": d for n, d in enumerate(DIGESTS)}, "/registry-mirror/ingest"
        )
    assert sorted((e.data["tag"], e.data["digest"]) for e in removed) == [
        (f"new{n}", d) for n, d in enumerate(DIGESTS)
    ]
