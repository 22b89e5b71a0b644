"""`mirror stats` against a real database: the tables, --json, --scope, --top."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import orjson
from click.testing import CliRunner

from mirror.cli import main
from mirror.store.pool import create_pool
from tests.integration.stats_world import IndexWriter, make_image
from tests.postgres_fixture import dsn_with_database, new_database_name

D = [f"sha256:{i:064x}" for i in range(6)]


async def populate(dsn: str) -> None:
    pool: asyncpg.Pool = await create_pool(dsn, max_size=1)
    try:
        async with pool.acquire() as conn:
            writer = IndexWriter(conn)
            await writer.push(
                [
                    make_image(
                        "crp00000000000000001", "crpreg1/base", (D[0], 10), [(D[1], 3 << 20)]
                    ),
                    make_image(
                        "crp00000000000000002",
                        "crpreg1/app",
                        (D[2], 10),
                        [(D[1], 3 << 20), (D[3], 2048)],
                    ),
                ],
                folder_id="b1gfolder",
            )
            await writer.push(
                [make_image("crp00000000000000003", "crpreg2/app", (D[4], 10), [(D[5], 99)])]
            )
            await writer.delete(["crp00000000000000003"])
            await writer.settle()
    finally:
        await pool.close()


def test_terminal_report_has_a_row_per_scope_and_top_layers(database_url: str) -> None:
    asyncio.run(populate(database_url))
    result = CliRunner().invoke(main, ["stats", "--database-url", database_url])
    assert result.exit_code == 0, result.output
    out = result.output
    for text in (
        "all",
        "folder:b1gfolder",
        "registry:crpreg1",
        "Top shared layers",
        "6.0 MiB",
        "3.0 MiB",
    ):
        assert text in out, text
    assert "registry:crpreg2" not in out  # no image left there
    assert "Reclaimable (no image references them): 2 blob(s), 109 B" in out
    assert "Exact as of event 0 (" in out and "nothing behind." in out


def test_json_for_one_scope(database_url: str) -> None:
    asyncio.run(populate(database_url))
    result = CliRunner().invoke(
        main,
        [
            "stats",
            "--database-url",
            database_url,
            "--json",
            "--scope",
            "repository:crpreg1/app",
            "--top",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    body = orjson.loads(result.output)
    assert body["scopes"] == [
        {
            "scope": "repository:crpreg1/app",
            "images": "1",
            "blobs": "3",
            "logicalBytes": str(10 + (3 << 20) + 2048),
            "compressedBytes": str((3 << 20) + 2048),
            "storedBytes": str(10 + (3 << 20) + 2048),
            "savedBytes": "0",
            "dedupRatio": 1.0,
            "reclaimableBlobs": "0",
            "reclaimableBytes": "0",
        }
    ]
    assert [layer["digest"] for layer in body["layers"]] == [D[1]]
    assert body["reclaimableBlobs"] == "2" and len(body["reclaimable"]) == 1
    assert body["asOf"]["eventId"] == "0" and body["asOf"]["time"].endswith("Z")
    assert body["behind"] == {"changes": "0", "seconds": 0}


def test_bad_scope_is_one_line_naming_the_flag(database_url: str) -> None:
    result = CliRunner().invoke(
        main, ["stats", "--database-url", database_url, "--scope", "bucket:x"]
    )
    assert result.exit_code == 2
    (line,) = result.output.splitlines()
    assert line.startswith("mirror: configuration error: --scope: ") and "unknown kind" in line
    assert "Usage:" not in result.output


def test_an_unknown_scope_is_not_found_not_a_table_of_zeros(database_url: str) -> None:
    asyncio.run(populate(database_url))
    result = CliRunner().invoke(
        main, ["stats", "--database-url", database_url, "--scope", "registry:doesnotexist"]
    )
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "mirror: not found: registry:doesnotexist is not in the index (no image of it was mirrored)"
    ]
    # a scope whose images were all deleted is known: its zeros are the truth
    result = CliRunner().invoke(
        main, ["stats", "--database-url", database_url, "--scope", "registry:crpreg2", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output)["scopes"][0]["images"] == "0"


def test_data_dir_flag_wins_over_the_environment_and_creates_nothing(
    database_url: str, tmp_path: Path
) -> None:
    asyncio.run(populate(database_url))
    empty = tmp_path / "elsewhere"
    result = CliRunner(env={"MIRROR_DATABASE_URL": database_url}).invoke(
        main, ["stats", "--data-dir", str(empty)]
    )
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1].startswith(
        f"mirror: no index in {empty}: nothing was mirrored there; "
    )
    assert not empty.exists()  # no cluster made for a read


def test_a_database_without_the_schema_is_said_so_and_left_alone(postgres_dsn: str) -> None:
    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    async def has_schema(dsn: str) -> bool:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval("SELECT to_regclass('schema_migrations')") is not None
        finally:
            await conn.close()

    name = new_database_name()
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        dsn = dsn_with_database(postgres_dsn, name)
        result = CliRunner().invoke(main, ["stats", "--database-url", dsn])
        assert result.exit_code == 1, result.output
        assert result.output.splitlines() == [
            "mirror: no index in the database given (--database-url / MIRROR_DATABASE_URL): "
            "its database has no mirror schema; pass --data-dir DIR or --database-url DSN"
        ]
        assert not asyncio.run(has_schema(dsn))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_a_schema_behind_asks_for_db_upgrade_and_is_not_migrated(database_url: str) -> None:
    async def forget_last_migration() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(
                await conn.fetchval(
                    "DELETE FROM schema_migrations WHERE version = "
                    "(SELECT max(version) FROM schema_migrations) RETURNING version"
                )
            )
        finally:
            await conn.close()

    async def recorded(version: int) -> bool:
        conn = await asyncpg.connect(database_url)
        try:
            return bool(
                await conn.fetchval("SELECT 1 FROM schema_migrations WHERE version = $1", version)
            )
        finally:
            await conn.close()

    version = asyncio.run(forget_last_migration())
    result = CliRunner().invoke(main, ["stats", "--database-url", database_url])
    assert result.exit_code == 1, result.output
    assert "is behind this version (1 migration(s) pending" in result.output
    assert "run `mirror db upgrade` first" in result.output
    assert not asyncio.run(recorded(version))
