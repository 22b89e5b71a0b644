"""Session services (real PostgreSQL, real Kafka) and a fresh migrated database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from mirror.settings import Settings
from mirror.store.migrate import apply_migrations
from mirror.store.pool import create_pool
from tests.event_contract import outbox_violations
from tests.kafka_fixture import kafka_bootstrap  # noqa: F401  (session fixture)
from tests.postgres_fixture import dsn_with_database, new_database_name, postgres_for_tests

TEMPLATE_DB = "mirror_template"

# Tests own this server: durability buys nothing here and costs seconds.
FAST_SETTINGS = ("fsync", "synchronous_commit", "full_page_writes")


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """Admin DSN of the tests' PostgreSQL server (session-wide)."""
    with postgres_for_tests() as dsn:
        yield dsn


@pytest.fixture(scope="session")
async def template_database(postgres_dsn: str) -> str:
    """A database migrated once per session; each test copies it."""
    admin = await asyncpg.connect(postgres_dsn)
    try:
        for setting in FAST_SETTINGS:
            try:
                await admin.execute(f"ALTER SYSTEM SET {setting} = off")
            except asyncpg.InsufficientPrivilegeError:
                break
        await admin.execute("SELECT pg_reload_conf()")
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"')
        await admin.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn_with_database(postgres_dsn, TEMPLATE_DB))
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    return TEMPLATE_DB


@pytest.fixture
async def database_url(
    postgres_dsn: str, template_database: str, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """DSN of a fresh, migrated database for this test alone; dropped afterwards, once
    every event the test produced was checked against its schema (tests/event_contract.py)."""
    name = new_database_name()
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    finally:
        await admin.close()
    yield dsn_with_database(postgres_dsn, name)
    if request.node.get_closest_marker("synthetic_events") is None:
        conn = await asyncpg.connect(dsn_with_database(postgres_dsn, name))
        try:
            _, problems = await outbox_violations(conn)
        finally:
            await conn.close()
        assert not problems, "events that break their published schema:\n" + "\n".join(problems)
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def db_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool (orjson codecs) on this test's fresh database."""
    pool = await create_pool(database_url, max_size=5)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def settings(database_url: str, tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    """Settings pointing at this test's database (no upstream, no Kafka)."""
    return Settings.load(
        env={"MIRROR_DATABASE_URL": database_url, "MIRROR_DATA_DIR": str(tmp_path)}
    )
