"""The migrator and the pool against real PostgreSQL."""

import asyncpg
import pytest

from mirror.errors import MigrationError
from mirror.model import Event, EventType
from mirror.store.migrate import (
    Migration,
    apply_migrations,
    find_migrations,
    find_routines,
    pending_migrations,
)
from mirror.store.outbox import append_events
from tests.postgres_fixture import dsn_with_database, new_database_name


@pytest.fixture
async def empty_database(postgres_dsn: str):  # type: ignore[no-untyped-def]
    name = new_database_name("empty")
    admin = await asyncpg.connect(postgres_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    yield dsn_with_database(postgres_dsn, name)
    admin = await asyncpg.connect(postgres_dsn)
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


async def test_server_is_postgresql_18(postgres_dsn: str) -> None:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        version = await conn.fetchval("SHOW server_version_num")
    finally:
        await conn.close()
    assert int(version) >= 180000


async def test_migrator_from_empty_then_idempotent(empty_database: str) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        applied = await apply_migrations(conn)
        migrations = [m for m in applied if isinstance(m, Migration)]
        assert [m.version for m in migrations] == [m.version for m in find_migrations()]
        # the routines come after every migration
        assert applied[len(migrations) :] == find_routines()
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
        assert {"images", "blobs", "outbox", "scopes", "sync_runs"} <= tables
        versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in versions] == [m.version for m in migrations]
        routines = await conn.fetch("SELECT name FROM schema_routines ORDER BY name")
        assert [r["name"] for r in routines] == [r.name for r in find_routines()]
        assert await apply_migrations(conn) == []
        assert await pending_migrations(conn) == []
    finally:
        await conn.close()


async def test_concurrent_migrators_apply_each_file_once(empty_database: str) -> None:
    import asyncio

    conns = [await asyncpg.connect(empty_database) for _ in range(3)]
    try:
        results = await asyncio.gather(*(apply_migrations(c) for c in conns))
        assert sum(len(r) for r in results) == len(find_migrations()) + len(find_routines())
        count = await conns[0].fetchval("SELECT count(*) FROM schema_migrations")
        assert count == len(find_migrations())
    finally:
        for c in conns:
            await c.close()


async def test_failed_migration_leaves_nothing_behind(empty_database: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "001_ok.sql").write_text("CREATE TABLE a (x int);")
    (tmp_path / "002_bad.sql").write_text("CREATE TABLE b (x int); SELECT * FROM nowhere;")
    conn = await asyncpg.connect(empty_database)
    try:
        with pytest.raises(MigrationError, match="002_bad"):
            await apply_migrations(conn, tmp_path)
        assert await conn.fetchval("SELECT to_regclass('b')") is None
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 1
    finally:
        await conn.close()


async def test_a_routine_file_is_applied_again_when_it_changes(
    empty_database: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "001_f.sql").write_text(
        "CREATE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 1';"
    )
    (tmp_path / "routines").mkdir()
    routine = tmp_path / "routines" / "answer.sql"
    routine.write_text(
        "CREATE OR REPLACE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 2';"
    )
    conn = await asyncpg.connect(empty_database)
    try:
        assert [s.name for s in await apply_migrations(conn, tmp_path)] == ["001_f", "answer"]
        assert await conn.fetchval("SELECT answer()") == 2
        assert await apply_migrations(conn, tmp_path) == []
        routine.write_text(
            "CREATE OR REPLACE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 3';"
        )
        assert [s.name for s in await pending_migrations(conn, tmp_path)] == ["answer"]
        assert [s.name for s in await apply_migrations(conn, tmp_path)] == ["answer"]
        assert await conn.fetchval("SELECT answer()") == 3
        # a routine that fails leaves the previous body and its checksum in place
        routine.write_text(
            "CREATE OR REPLACE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT x';"
        )
        with pytest.raises(MigrationError, match=r"answer\.sql"):
            await apply_migrations(conn, tmp_path)
        assert await conn.fetchval("SELECT answer()") == 3
        assert [s.name for s in await pending_migrations(conn, tmp_path)] == ["answer"]
    finally:
        await conn.close()


async def test_the_routines_are_applied_again_after_any_migration(
    empty_database: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """A migration that writes a table anew drops the trigger a routine made on it: the
    unchanged routine makes it again, at the next start too when its step failed."""
    (tmp_path / "001_t.sql").write_text("CREATE TABLE t (x int); CREATE TABLE seen (n int);")
    (tmp_path / "routines").mkdir()
    (tmp_path / "routines" / "log.sql").write_text(
        "CREATE OR REPLACE FUNCTION log_it() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN INSERT INTO seen VALUES (1); RETURN NULL; END $$;"
        " CREATE OR REPLACE TRIGGER t_log AFTER INSERT ON t"
        " FOR EACH STATEMENT EXECUTE FUNCTION log_it();"
    )
    rewrite = "DROP TABLE t; CREATE TABLE t (x int);"
    conn = await asyncpg.connect(empty_database)
    try:
        assert [s.name for s in await apply_migrations(conn, tmp_path)] == ["001_t", "log"]
        (tmp_path / "002_rewrite.sql").write_text(rewrite)
        assert [s.name for s in await pending_migrations(conn, tmp_path)] == ["002_rewrite", "log"]
        assert [s.name for s in await apply_migrations(conn, tmp_path)] == ["002_rewrite", "log"]
        await conn.execute("INSERT INTO t VALUES (1)")
        assert await conn.fetchval("SELECT count(*) FROM seen") == 1
        # the routines' step fails after the migration: they are pending at the next start
        (tmp_path / "003_rewrite.sql").write_text(rewrite)
        bad = tmp_path / "routines" / "a_bad.sql"
        bad.write_text("SELECT * FROM nowhere;")
        with pytest.raises(MigrationError, match=r"a_bad\.sql"):
            await apply_migrations(conn, tmp_path)
        bad.unlink()
        assert [s.name for s in await pending_migrations(conn, tmp_path)] == ["log"]
        await apply_migrations(conn, tmp_path)
        await conn.execute("INSERT INTO t VALUES (2)")
        assert await conn.fetchval("SELECT count(*) FROM seen") == 2
    finally:
        await conn.close()


async def test_pool_decodes_json_with_orjson(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        assert await conn.fetchval("SELECT $1::jsonb", {"a": [1, "2"]}) == {"a": [1, "2"]}
        # ready JSON text passes through untouched
        assert await conn.fetchval("SELECT $1::json::text", b'{"b":1}') == '{"b":1}'


async def test_outbox_append_needs_a_transaction(db_pool: asyncpg.Pool) -> None:
    event = Event(EventType.IMAGE_CREATED, "crp00000000000000001", {"id": "crp00000000000000001"})
    async with db_pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            await append_events(conn, [event])
        async with conn.transaction():
            await append_events(
                conn,
                [
                    event,
                    Event(
                        EventType.BLOB_ADDED,
                        "sha256:aa",
                        {"digest": "sha256:aa", "size": "1", "image": "crp00000000000000001"},
                    ),
                ],
            )
        rows = await conn.fetch("SELECT topic, key, type, data FROM outbox_events ORDER BY id")
    assert [(r["topic"], r["key"], r["type"]) for r in rows] == [
        ("images", "crp00000000000000001", "registry.image.created"),
        ("blobs", "sha256:aa", "registry.blob.added"),
    ]
    assert rows[0]["data"] == {"id": "crp00000000000000001"}
