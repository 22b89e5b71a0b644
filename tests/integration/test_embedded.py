"""The embedded PostgreSQL's sizing: applied at once to a new cluster, at the next start to an
old one; and its WAL: removed, not kept for reuse, by the checkpoint after a big ingest pass."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

import mirror.store.embedded as embedded_module
from mirror.ingest.summary import IngestSummary, ScopeResult, WalkStatus
from mirror.runner.app import _after_pass
from mirror.settings import Settings
from mirror.store.embedded import (
    RELEASE_WAL_AFTER_CHANGES,
    EmbeddedPostgres,
    server_settings,
)

SHOWN = ("shared_buffers", "max_wal_size", "checkpoint_timeout", "wal_recycle")
MB = 1024 * 1024
WAL_BYTES = "SELECT sum(size) FROM pg_ls_waldir()"
# only a vacuum sets visibility-map bits (pg_class counts them at its end)
ALL_VISIBLE_PAGES = "SELECT relallvisible FROM pg_class WHERE relname = 'wal_filler'"
# ~160 MB of heap, all of it WAL-logged: ten 16 MB segments at least.
WRITE_WAL = """
DROP TABLE IF EXISTS wal_filler;
CREATE TABLE wal_filler (n int, pad text) WITH (autovacuum_enabled = off);
INSERT INTO wal_filler SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 150000) AS g;
"""


async def shown(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {name: await conn.fetchval(f"SHOW {name}") for name in SHOWN}
    finally:
        await conn.close()


FREE_DISK = 40 * 1024 * MB  # what the tests' clusters see as the disk's free space


@pytest.fixture(autouse=True)
def fixed_free_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded_module, "_free_disk_bytes", lambda path: FREE_DISK)


def expected() -> dict[str, str]:
    # PostgreSQL shows 1024MB as 1GB
    return {k: v.replace("1024MB", "1GB") for k, v in server_settings(Path(".")).items()}


@pytest.mark.parametrize(
    ("free_gb", "wal"), [(1, "2GB"), (8, "2GB"), (40, "10GB"), (100, "16GB"), (None, "2GB")]
)
def test_the_wal_between_checkpoints_is_a_quarter_of_the_free_disk(
    monkeypatch: pytest.MonkeyPatch, free_gb: int | None, wal: str
) -> None:
    def free(path: Path) -> int:
        if free_gb is None:
            raise OSError("no such disk")
        return free_gb * 1024 * MB

    monkeypatch.setattr(embedded_module, "_free_disk_bytes", free)
    assert server_settings(Path("."))["max_wal_size"] == wal
    assert server_settings()["max_wal_size"] == "2GB"  # no folder: the floor


async def test_a_new_cluster_starts_with_the_sizing(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path, delete_on_stop=True)
    try:
        dsn = await server.astart()
        assert await shown(dsn) == expected()
    finally:
        await server.astop()
    assert not (tmp_path / "pgdata").exists()


async def test_an_older_cluster_gets_the_sizing_at_its_next_start(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path)
    try:
        dsn = await server.astart()
        conn = await asyncpg.connect(dsn)
        try:  # as a cluster made before the sizing existed
            await conn.execute("ALTER SYSTEM RESET ALL")
        finally:
            await conn.close()
    finally:
        await server.astop()
    server = EmbeddedPostgres(tmp_path)
    try:
        dsn = await server.astart()  # writes the settings; a running server is not restarted
        now = await shown(dsn)  # ... but reloaded: what needs no restart applies at once
        assert now["checkpoint_timeout"] == "15min"
        assert now["wal_recycle"] == "off"
        assert now["shared_buffers"] == "128MB"
    finally:
        await server.astop()
    server = EmbeddedPostgres(tmp_path, delete_on_stop=True)
    try:
        assert await shown(await server.astart()) == expected()
    finally:
        await server.astop()


async def test_a_cluster_with_the_older_sizing_gets_the_new_settings(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path)
    try:
        conn = await asyncpg.connect(await server.astart())
        try:  # as a cluster sized before wal_recycle was part of the sizing
            await conn.execute("ALTER SYSTEM RESET wal_recycle")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()
    finally:
        await server.astop()
    server = EmbeddedPostgres(tmp_path, delete_on_stop=True)
    try:
        assert await shown(await server.astart()) == expected()
    finally:
        await server.astop()


@pytest.fixture(scope="module")
async def embedded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Path, str]]:
    data_dir = tmp_path_factory.mktemp("embedded-wal")
    server = EmbeddedPostgres(data_dir, delete_on_stop=True)
    try:
        yield data_dir, await server.astart()
    finally:
        await server.astop()


def summary(changed: int) -> IngestSummary:
    return IngestSummary.of([ScopeResult("folder/f1", WalkStatus.COMPLETE, created=changed)], 1.0)


async def wal_after_writing(conn: asyncpg.Connection) -> int:
    await conn.execute("CHECKPOINT")  # nothing of earlier tests' WAL left
    await conn.execute(WRITE_WAL)
    return int(await conn.fetchval(WAL_BYTES))


@pytest.mark.slow
async def test_a_big_pass_on_the_embedded_server_removes_its_wal(
    embedded: tuple[Path, str],
) -> None:
    data_dir, dsn = embedded
    seen: list[IngestSummary] = []
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    on_pass = _after_pass(Settings.load({}, data_dir=data_dir), pool, seen.append)
    try:
        async with pool.acquire() as conn:
            written = await wal_after_writing(conn)
            assert written >= 128 * MB
            await on_pass(summary(RELEASE_WAL_AFTER_CHANGES))
            left = int(await conn.fetchval(WAL_BYTES))
            visible = await conn.fetchval(ALL_VISIBLE_PAGES)
    finally:
        await pool.close()
    assert visible > 0  # vacuumed first: the hint and visibility bits' page images are gone too
    assert seen == [summary(RELEASE_WAL_AFTER_CHANGES)]  # the caller's hook ran first
    # recycled segments would have stayed (renamed for reuse): only the current ones are left
    assert left <= 48 * MB, (written, left)


@pytest.mark.slow
async def test_a_small_pass_leaves_the_wal_to_the_timed_checkpoint(
    embedded: tuple[Path, str],
) -> None:
    data_dir, dsn = embedded
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    on_pass = _after_pass(Settings.load({}, data_dir=data_dir), pool, None)
    try:
        async with pool.acquire() as conn:
            written = await wal_after_writing(conn)
            await on_pass(summary(RELEASE_WAL_AFTER_CHANGES - 1))
            left = int(await conn.fetchval(WAL_BYTES))
    finally:
        await pool.close()
    assert left >= written


@pytest.mark.slow
async def test_another_server_gets_no_checkpoint(embedded: tuple[Path, str]) -> None:
    _, dsn = embedded
    settings = Settings.load({}, database_url=dsn)  # a server the mirror did not start
    assert not settings.embedded_database
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    on_pass = _after_pass(settings, pool, None)
    try:
        async with pool.acquire() as conn:
            written = await wal_after_writing(conn)
            await on_pass(summary(RELEASE_WAL_AFTER_CHANGES))
            left = int(await conn.fetchval(WAL_BYTES))
    finally:
        await pool.close()
    assert left >= written  # its WAL is its administrator's business
