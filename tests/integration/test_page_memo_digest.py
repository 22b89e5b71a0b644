"""A page memo keeping one digest of its images' content hashes (sql/118), against real
PostgreSQL: the rows an older index kept are converted to the digest the ingest writes
and checks (the check itself: tests/integration/test_ingest_simulator.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mirror.ingest.memo import hashes_digest
from mirror.store.migrate import apply_migrations
from tests.postgres_fixture import schema_before, scratch_database

HASHES = [hashlib.blake2b(bytes([n]), digest_size=16).digest() for n in range(3)]


async def test_the_upgrade_keeps_each_remembered_page_as_its_digest(
    postgres_dsn: str, tmp_path: Path
) -> None:
    old_sql = schema_before(tmp_path / "sql", 118)
    async with scratch_database(postgres_dsn, "memo_118", sql_dir=old_sql) as conn:
        await conn.executemany(
            "INSERT INTO ingest_page_memo"
            " (walk_key, page_token, body_hash, next_token, ids, hashes, registries)"
            " VALUES ('registry:r1?pageSize=3', $1, $2, $3, $4, $5, '{r1}')",
            [
                ("", b"b1", "t1", ["crp1", "crp2", "crp3"], HASHES),
                ("t1", b"b2", "", [], []),
            ],
        )
        await apply_migrations(conn)
        rows = await conn.fetch(
            "SELECT page_token, body_hash, next_token, ids, hashes_digest, registries"
            " FROM ingest_page_memo ORDER BY page_token"
        )
    assert [tuple(r) for r in rows] == [
        ("", b"b1", "t1", ["crp1", "crp2", "crp3"], hashes_digest(HASHES), ["r1"]),
        ("t1", b"b2", "", [], hashes_digest([]), ["r1"]),
    ]
    assert hashes_digest(HASHES) == hashlib.sha256(b"".join(HASHES)).digest()
