"""The suite changes the configuration of its own PostgreSQL only, never of a given one."""

from __future__ import annotations

import asyncpg
import pytest

from tests.postgres_fixture import postgres_for_tests


def test_a_server_given_through_the_environment_is_left_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    given = "postgresql://someone@127.0.0.1:5999/postgres"
    monkeypatch.setenv("MIRROR_TEST_DATABASE_URL", given)
    with postgres_for_tests() as server:
        assert server.dsn == given
        assert not server.owned
        assert server.speed_up_statements() == []


async def test_the_suites_own_server_is_sped_up(postgres_server, template_database) -> None:  # type: ignore[no-untyped-def]
    """The session's server (embedded, or a container, unless MIRROR_TEST_DATABASE_URL is set)."""
    conn = await asyncpg.connect(postgres_server.dsn)
    try:
        fsync = await conn.fetchval("SHOW fsync")
    finally:
        await conn.close()
    if postgres_server.owned:
        assert fsync == "off"
    else:
        assert postgres_server.speed_up_statements() == []
