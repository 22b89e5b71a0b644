"""`mirror db upgrade` takes an index at schema 080 (``image_blobs`` rows, text digests)
to sql/090 (blob references as arrays on the image row, 32-byte digest keys) with
nothing lost: every List page and Get answer byte for byte, every blob answer, every
stats figure (reclaimable history included) the same before and after."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestServer

from mirror.api.app import create_app
from mirror.errors import MigrationError
from mirror.events.envelope import format_time
from mirror.model import Scope, ScopeKind, digest_key, digest_text
from mirror.settings import Settings
from mirror.stats.folder import fold_once
from mirror.stats.queries import fetch_freshness, fetch_stats
from mirror.store.migrate import SQL_DIR, apply_migrations
from mirror.store.pool import create_pool
from tests.integration.legacy_index import LegacyWriter, old_schema
from tests.integration.refcounts import BLOB_REFERENCES, ref_count_mismatches
from tests.integration.stats_world import IndexWriter, make_image
from tests.integration.test_stats_property import assert_served_equals_reference
from tests.postgres_fixture import dsn_with_database, new_database_name

D = [f"sha256:{i:064x}" for i in range(16)]
# written before the ingest checked digests (mirror/upstream/messages.py): kept as text
ODD = "sha512:" + "ab" * 64

BASE = make_image("crp00000000000000001", "crpreg1/base", (D[0], 10), [(D[1], 100), (D[2], 200)])
APP = make_image(
    "crp00000000000000002",
    "crpreg1/app",
    (D[3], 10),
    [(D[1], 100), (D[2], 200), (D[4], 50)],
    ["v1", "latest"],
)
TWICE = make_image(  # a layer listed twice counts twice
    "crp00000000000000003", "crpreg1/app", (D[5], 11), [(D[1], 100), (D[1], 100), (D[6], 60)]
)
OTHER = make_image("crp00000000000000004", "crpreg2/api", (D[3], 10), [(D[1], 100), (ODD, 70)])
BARE = make_image("crp00000000000000005", "crpreg2/bare", None, [(D[7], 5)])
GONE = make_image("crp00000000000000006", "crpreg2/api", (D[8], 12), [(D[9], 90), (D[1], 100)])
REGISTRIES = ("crpreg1", "crpreg2")
FOLDERS = ("b1gfolder1", "b1gfolder2")
ORDERS = ("", "created_at desc", "name, digest desc", "name desc, created_at")


@dataclass
class OldIndex:
    conn: asyncpg.Connection
    pool: asyncpg.Pool
    settings: Settings


@pytest.fixture
async def index_080(postgres_dsn: str, tmp_path: Path) -> AsyncIterator[OldIndex]:
    """A database at schema 080 with the stats routines of then (before sql/090)."""
    old_sql = old_schema(tmp_path / "sql", 80, routines=True)
    name = new_database_name("upgrade090")
    admin = await asyncpg.connect(postgres_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = dsn_with_database(postgres_dsn, name)
    conn = await asyncpg.connect(dsn)
    pool = await create_pool(dsn, max_size=3)
    try:
        await apply_migrations(conn, old_sql)
        assert await conn.fetchval("SELECT to_regclass('image_blobs') IS NOT NULL")
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 80
        settings = Settings.load(
            env={
                "MIRROR_DATABASE_URL": dsn,
                "MIRROR_DATA_DIR": str(tmp_path),
                "MIRROR_GRPC_PORT": "0",
            }
        )
        yield OldIndex(conn, pool, settings)
    finally:
        await pool.close()
        await conn.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def fill(writer: LegacyWriter) -> None:
    await writer.push([BASE, APP, TWICE], folder_id=FOLDERS[0])
    await writer.push([OTHER, BARE, GONE])
    await writer.set_folder("crpreg2", FOLDERS[1])
    await fold_once(writer.conn, wait=True)  # the routines of then fold it
    await writer.delete([GONE.id])  # D8, D9: reclaimable in crpreg2, its folder, crpreg2/api
    await fold_once(writer.conn, wait=True)


def all_scopes() -> list[Scope | None]:
    scopes: list[Scope | None] = [None]
    scopes += [Scope(ScopeKind.REGISTRY, r) for r in REGISTRIES]
    scopes += [Scope(ScopeKind.FOLDER, f) for f in FOLDERS]
    scopes += [
        Scope(ScopeKind.REPOSITORY, n)
        for n in sorted({i.name for i in (BASE, APP, TWICE, OTHER, BARE, GONE)})
    ]
    return scopes


async def api_answers(
    settings: Settings, pool: asyncpg.Pool, *, blobs: bool = True
) -> dict[str, bytes]:
    """Every List page (each scope and order, small pages, tokens followed), every Get and
    (with ``blobs``: this code's endpoint needs the new schema) every blob, as the raw bytes
    the API answers."""
    list_queries = [f"registryId={r}" for r in REGISTRIES]
    list_queries += [f"folderId={f}" for f in FOLDERS]
    list_queries += ["registryId=crpreg1&repositoryName=crpreg1/app"]
    answers: dict[str, bytes] = {}
    server = TestServer(create_app(settings, pool=pool), host="127.0.0.1")
    await server.start_server()
    try:
        base = str(server.make_url("")).rstrip("/")
        async with aiohttp.ClientSession() as session:

            async def get(path: str) -> bytes:
                async with session.get(base + path) as response:
                    assert response.status == 200, (path, await response.text())
                    return await response.read()

            for query in list_queries:
                for order in ORDERS:
                    token = ""
                    for page in range(10):
                        path = f"/container-registry/v1/images?{query}&pageSize=2"
                        path += f"&orderBy={order}" if order else ""
                        path += f"&pageToken={token}" if token else ""
                        body = await get(path)
                        answers[f"{query} {order} page {page}"] = body
                        token = orjson.loads(body).get("nextPageToken", "")
                        if not token:
                            break
                    assert not token
            for image in (BASE, APP, TWICE, OTHER, BARE, GONE):
                async with session.get(f"{base}/container-registry/v1/images/{image.id}") as r:
                    answers[f"get {image.id}"] = (await r.read()) if r.status == 200 else b"404"
            for digest in [*D[:10], ODD, D[15]] if blobs else []:
                async with session.get(f"{base}/mirror/v1/blobs/{digest}") as r:
                    answers[f"blob {digest}"] = (await r.read()) if r.status == 200 else b"404"
    finally:
        await server.close()
    return answers


# This code's List and Get read the columns an image's JSON is made of (sql/104, 111); on
# the schema of 080 every row holds its doc, so what they answer there comes from the
# stored doc alone. They also read the digest as its key and the registry as its number
# (sql/120): copies of the two beside the columns of then (no trigger sees them). Dropped
# before the migrations.
READERS_ON_080 = """
ALTER TABLE images ADD COLUMN doc_template text, ADD COLUMN blob_digests bytea[],
    ADD COLUMN blob_sizes bigint[], ADD COLUMN blob_ids text;
CREATE TABLE image_registries (id serial PRIMARY KEY, name text COLLATE "C" UNIQUE);
INSERT INTO image_registries (name) SELECT DISTINCT registry_id FROM images ORDER BY 1;
ALTER TABLE images RENAME COLUMN digest TO digest_080;
ALTER TABLE images ADD COLUMN digest bytea, ADD COLUMN registry integer;
SET session_replication_role = replica;
UPDATE images SET digest = decode(substr(digest_080, 8), 'hex'),
    registry = (SELECT r.id FROM image_registries AS r WHERE r.name = registry_id);
RESET session_replication_role;
"""
READERS_ON_080_DROPPED = """
ALTER TABLE images DROP COLUMN doc_template, DROP COLUMN blob_digests,
    DROP COLUMN blob_sizes, DROP COLUMN blob_ids, DROP COLUMN digest, DROP COLUMN registry;
ALTER TABLE images RENAME COLUMN digest_080 TO digest;
DROP TABLE image_registries;
"""


async def blob_answers_before(conn: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    """What the blob endpoint answered at schema 080, by brute force over image_blobs."""
    out: dict[str, dict[str, Any]] = {}
    for blob in await conn.fetch("SELECT * FROM blobs ORDER BY digest"):
        holders = await conn.fetch(
            "SELECT i.id, i.name, i.doc::text AS doc FROM images i WHERE i.id IN "
            "(SELECT image_id FROM image_blobs WHERE digest = $1) ORDER BY i.id",
            blob["digest"],
        )
        names = sorted({h["name"] for h in holders})
        head: dict[str, Any] = {
            "digest": blob["digest"],
            "size": str(blob["size"]),
            "refCount": str(blob["ref_count"]),
            "firstSeen": format_time(blob["first_seen"]),
        }
        if blob["orphaned_at"] is not None:
            head["orphanedAt"] = format_time(blob["orphaned_at"])
        if names:
            head["repositories"] = names
        head["repositoryCount"] = str(len(names))
        if holders:
            head["images"] = [orjson.loads(h["doc"]) for h in holders]
        out[blob["digest"]] = head
    return out


async def test_upgrade_keeps_every_answer(index_080: OldIndex) -> None:
    conn = index_080.conn
    writer = LegacyWriter(conn)
    await fill(writer)
    references_before = await conn.fetchval("SELECT count(*) FROM image_blobs")
    stats_before = {str(s): await fetch_stats(conn, s) for s in all_scopes()}
    for scope in all_scopes():  # the routines of then were exact
        assert stats_before[str(scope)] == writer.reference.stats(scope), scope
    blobs_before = await blob_answers_before(conn)
    assert set(blobs_before) == {*D[:10], ODD}
    await conn.execute(READERS_ON_080)
    api_before = await api_answers(index_080.settings, index_080.pool, blobs=False)
    await conn.execute(READERS_ON_080_DROPPED)

    applied = await apply_migrations(conn, SQL_DIR)
    names = [step.name for step in applied]
    assert {"090_blob_arrays", "091_stats_binary_digests"} <= set(names)
    assert names[-1] == "stats"
    await index_080.pool.expire_connections()  # sessions that knew the old column types

    # the shape: arrays on the image row, 32-byte keys, no image_blobs
    assert await conn.fetchval("SELECT to_regclass('image_blobs') IS NULL")
    assert await conn.fetchval(BLOB_REFERENCES) == references_before == 15
    assert await ref_count_mismatches(conn) == 0
    row = await conn.fetchrow(
        "SELECT blob_digests, blob_sizes, blob_config FROM images WHERE id = $1", TWICE.id
    )
    assert [digest_text(d) for d in row["blob_digests"]] == [D[5], D[1], D[1], D[6]]
    assert (row["blob_sizes"], row["blob_config"]) == ([11, 100, 100, 60], True)
    assert await conn.fetchval("SELECT blob_config FROM images WHERE id = $1", BARE.id) is False
    keys = {bytes(r["digest"]) for r in await conn.fetch("SELECT digest FROM blobs")}
    assert keys == {digest_key(d) for d in blobs_before}
    assert {len(k) for k in keys} == {32, len(digest_key(ODD))}

    # every answer the same: List pages and Gets byte for byte, blobs, stats
    api_after = await api_answers(index_080.settings, index_080.pool)
    assert {k for k in api_after if not k.startswith("blob ")} == api_before.keys()
    for key, body in api_before.items():
        assert api_after[key] == body, key
    for digest, expected in blobs_before.items():
        assert orjson.loads(api_after[f"blob {digest}"]) == expected, digest
    assert api_after[f"blob {D[15]}"] == b"404"

    assert (await fetch_freshness(conn)).pending_changes == 0
    for scope in all_scopes():
        assert await fetch_stats(conn, scope) == stats_before[str(scope)], scope
    await assert_served_equals_reference(conn, writer.reference, settled=True)

    # and the new write path and folder take it from there
    new = IndexWriter(conn, writer.reference)
    await new.push([GONE])
    await new.delete([APP.id])
    await assert_served_equals_reference(conn, writer.reference)
    assert await ref_count_mismatches(conn) == 0


async def test_upgrade_folds_the_changes_pending_at_the_upgrade(index_080: OldIndex) -> None:
    """Changes the folder of then had not folded yet count, history included: an image
    pushed and deleted before any fold leaves its digests reclaimable in its scopes."""
    conn = index_080.conn
    writer = LegacyWriter(conn)
    await writer.push([BASE, OTHER], folder_id=FOLDERS[0])
    await fold_once(conn, wait=True)
    await writer.push([GONE, TWICE])
    await writer.delete([GONE.id])
    assert await conn.fetchval("SELECT count(*) FROM stats_changes") > 0

    await apply_migrations(conn, SQL_DIR)
    assert (await fetch_freshness(conn)).pending_changes == 0
    await assert_served_equals_reference(conn, writer.reference, settled=True)
    registry = await fetch_stats(conn, Scope(ScopeKind.REGISTRY, "crpreg2"))
    assert registry.reclaimable_blobs == 2  # GONE's config and D9


async def test_upgrade_refuses_what_the_arrays_cannot_hold(index_080: OldIndex) -> None:
    """An image_blobs row without its image would be lost: the upgrade stops, changing nothing."""
    conn = index_080.conn
    await LegacyWriter(conn).push([BASE])
    await conn.execute("DELETE FROM images WHERE id = $1", BASE.id)  # its rows left behind
    with pytest.raises(MigrationError, match="name no image"):
        await apply_migrations(conn, SQL_DIR)
    assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 80
    assert await conn.fetchval("SELECT count(*) FROM image_blobs") == 3


async def test_sql_and_python_digest_keys_agree(db_pool: asyncpg.Pool) -> None:
    for digest in (D[3], "sha256:" + "AB" * 32, "sha256:ff", ODD, "x" * 32, "x" * 31):
        key = await db_pool.fetchval("SELECT mirror_digest_key($1)", digest)
        assert bytes(key) == digest_key(digest), digest
        assert await db_pool.fetchval("SELECT mirror_digest_text($1)", key) == digest
