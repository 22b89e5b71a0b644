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
from tests.postgres_fixture import (
    TestServer,
    dsn_with_database,
    new_database_name,
    postgres_for_tests,
)

TEMPLATE_DB = "mirror_template"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TestServer]:
    """The tests' PostgreSQL server (session-wide), and whether the suite owns it."""
    with postgres_for_tests() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: TestServer) -> str:
    """Admin DSN of the tests' PostgreSQL server (session-wide)."""
    return postgres_server.dsn


@pytest.fixture(scope="session")
async def template_database(postgres_server: TestServer) -> str:
    """A database migrated once per session; each test copies it."""
    postgres_dsn = postgres_server.dsn
    admin = await asyncpg.connect(postgres_dsn)
    try:
        # never on a server given through MIRROR_TEST_DATABASE_URL: not ours to change
        statements = postgres_server.speed_up_statements()
        for statement in statements:
            await admin.execute(statement)
        if statements:
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
    """Settings pointing at this test's database (no upstream, no Kafka; gRPC on a free port)."""
    return Settings.load(
        env={
            "MIRROR_DATABASE_URL": database_url,
            "MIRROR_DATA_DIR": str(tmp_path),
            "MIRROR_GRPC_PORT": "0",
        }
    )
