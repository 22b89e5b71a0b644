"""Tag rows naming their repository by a number, their digest taken from the image
(sql/116), against real PostgreSQL.

The upgrade keeps every tag as the ingest reads it (a digest the image's row does not
give stays in the tag's row); the writers go on numbering new names, store no digest
the image gives, and their events carry the same digests as before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from mirror.ingest.tags import (
    SELECT_TAGS,
    TagRef,
    resolve_released,
    tag_changes,
    tags_of_deleted,
)
from mirror.model import Scope, ScopeKind, digest_key
from mirror.store.migrate import apply_migrations
from tests.integration.stats_world import IndexWriter, make_image
from tests.postgres_fixture import schema_before, scratch_database

SOURCE = "/registry-mirror/ingest"
OTHER = "sha256:" + "e" * 64  # a digest no image here has
ODD = "sha512:" + "ab" * 64  # not a sha256: stored as its text
STORED = """
SELECT p.name, t.tag, t.image_id, t.digest FROM tags t
JOIN tag_repositories p ON p.id = t.repository_id ORDER BY 1, 2
"""


@pytest.fixture
async def tags_before_116(postgres_dsn: str, tmp_path: Path) -> AsyncIterator[asyncpg.Connection]:
    """A database migrated up to the last migration before sql/116."""
    old_sql = schema_before(tmp_path / "sql", 116)
    async with scratch_database(postgres_dsn, "tags_116", sql_dir=old_sql) as conn:
        yield conn


async def read_tags(conn: asyncpg.Connection, keys: list[tuple[str, str]]) -> set[tuple]:  # type: ignore[type-arg]
    rows = await conn.fetch(SELECT_TAGS, [k[0] for k in keys], [k[1] for k in keys])
    return {tuple(r) for r in rows}


async def test_upgrade_keeps_every_tag_and_the_writers_go_on(
    tags_before_116: asyncpg.Connection,
) -> None:
    conn = tags_before_116
    writer = IndexWriter(conn)
    app = make_image("crp1", "reg/app", None, [("sha256:" + "1" * 64, 5)])
    web = make_image("crp2", "reg/web", None, [("sha256:" + "2" * 64, 5)])
    new = make_image("crp3", "reg/new", None, [("sha256:" + "3" * 64, 5)])
    await writer.push([app, web])
    released = datetime(2026, 1, 1, tzinfo=UTC)
    old_rows = [
        ("reg/app", "v1", "crp1", app.digest, None),  # the image's digest
        ("reg/app", "latest", "crp1", app.digest, released),  # let go, unclaimed
        ("reg/web", "v1", "crp2", OTHER, None),  # not the image's digest
        ("reg/gone", "v1", "crp9", ODD, None),  # no such image
    ]
    await conn.executemany(
        "INSERT INTO tags (repository, tag, image_id, digest, released_at)"
        " VALUES ($1, $2, $3, mirror_digest_key($4), $5)",
        old_rows,
    )
    keys = [(r[0], r[1]) for r in old_rows]
    want = {(r[0], r[1], r[2], r[3], r[4] is not None) for r in old_rows}

    await apply_migrations(conn)

    assert await read_tags(conn, keys) == want
    names = await conn.fetch("SELECT id, name FROM tag_repositories ORDER BY id")
    assert [tuple(r) for r in names] == [(1, "reg/app"), (2, "reg/gone"), (3, "reg/web")]
    assert [tuple(r) for r in await conn.fetch(STORED)] == [
        ("reg/app", "latest", "crp1", None),
        ("reg/app", "v1", "crp1", None),
        ("reg/gone", "v1", "crp9", digest_key(ODD)),
        ("reg/web", "v1", "crp2", digest_key(OTHER)),
    ]
    assert await conn.fetchval("SELECT released_at FROM tags WHERE tag = 'latest'") == released

    # claims: a new name draws the next number, a known one keeps its own; a move
    await writer.push([new])
    async with conn.transaction():
        added = await tag_changes(
            conn,
            [
                TagRef("reg/new", "v1", "crp3", new.digest),
                TagRef("reg/web", "v2", "crp2", web.digest),
                TagRef("reg/app", "v1", "crp2", web.digest),
            ],
            [],
            SOURCE,
        )
    assert [(e.subject, e.data["digest"], e.data.get("previousImageId")) for e in added] == [
        ("reg/new:v1", new.digest, None),
        ("reg/web:v2", web.digest, None),
        ("reg/app:v1", web.digest, "crp1"),
    ]
    names = await conn.fetch("SELECT id, name FROM tag_repositories ORDER BY id")
    assert [r["name"] for r in names] == ["reg/app", "reg/gone", "reg/web", "reg/new"]
    assert [r["id"] for r in names] == [1, 2, 3, 4]
    stored = {(r[0], r[1]): r[3] for r in await conn.fetch(STORED)}
    assert stored[("reg/new", "v1")] is None and stored[("reg/app", "v1")] is None
    assert stored[("reg/web", "v1")] == digest_key(OTHER)  # untouched

    # a complete walk of reg/app: the tag it let go is removed, its digest the image's
    async with conn.transaction():
        removed = await resolve_released(conn, Scope(ScopeKind.REPOSITORY, "reg/app"), SOURCE)
    assert [(e.subject, e.data["digest"], e.data["reason"]) for e in removed] == [
        ("reg/app:latest", app.digest, "untagged")
    ]

    # crp2 deleted: its tags go with the digests they had, the image's from the caller
    await writer.delete(["crp2"])
    async with conn.transaction():
        gone = await tags_of_deleted(conn, {"crp2": web.digest}, SOURCE)
    assert [(e.subject, e.data["digest"]) for e in gone] == [
        ("reg/app:v1", web.digest),
        ("reg/web:v1", OTHER),
        ("reg/web:v2", web.digest),
    ]
    assert [tuple(r)[:2] for r in await conn.fetch(STORED)] == [
        ("reg/gone", "v1"),
        ("reg/new", "v1"),
    ]
