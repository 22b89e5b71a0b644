"""`mirror stats` against a real database: the tables, --json, --scope, --top."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
from click.testing import CliRunner

from mirror.cli import main
from mirror.store.pool import create_pool
from tests.integration.stats_world import IndexWriter, make_image

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


def test_bad_scope_is_a_usage_error(database_url: str) -> None:
    result = CliRunner().invoke(
        main, ["stats", "--database-url", database_url, "--scope", "bucket:x"]
    )
    assert result.exit_code == 2
    assert "unknown kind" in result.output
