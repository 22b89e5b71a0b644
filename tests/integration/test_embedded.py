"""The embedded PostgreSQL's sizing: applied at once to a new cluster, at the next start to an old one."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from mirror.store.embedded import EmbeddedPostgres, server_settings

SHOWN = ("shared_buffers", "max_wal_size", "checkpoint_timeout")


async def shown(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {name: await conn.fetchval(f"SHOW {name}") for name in SHOWN}
    finally:
        await conn.close()


def expected() -> dict[str, str]:
    # PostgreSQL shows 1024MB as 1GB
    return {k: v.replace("1024MB", "1GB") for k, v in server_settings().items()}


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
        assert (await shown(dsn))["checkpoint_timeout"] == "5min"
    finally:
        await server.astop()
    server = EmbeddedPostgres(tmp_path, delete_on_stop=True)
    try:
        assert await shown(await server.astart()) == expected()
    finally:
        await server.astop()
