"""The version reads of the List page cache on real PostgreSQL: shared by the requests that ask
before a read is sent, never by one that asks after (mirror/api/page_cache.py)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from mirror.api import page_cache
from mirror.api.page_cache import VersionReads

INSERT_IMAGE = """
INSERT INTO images (id, name, registry, digest, doc, content_hash, created_ns)
VALUES ($1, 'crp1/app', image_registry('crp1'), mirror_digest_key('sha256:' || repeat('0', 64)),
        '{}', '\\x00', 0)
"""


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each version the database answered, in order (the reads that were sent)."""
    sent: list[int] = []
    read = page_cache.index_version

    async def counted(conn: asyncpg.Connection) -> int:
        version = await read(conn)
        sent.append(version)
        return version

    monkeypatch.setattr(page_cache, "index_version", counted)
    return sent


async def test_requests_that_ask_together_share_one_read(
    db_pool: asyncpg.Pool, reads: list[int]
) -> None:
    versions = VersionReads(db_pool)
    # ten requests ask in one turn of the event loop, before the read is sent
    answers = await asyncio.gather(*(versions.read() for _ in range(10)))
    assert len(reads) == 1 and answers == [reads[0]] * 10
    await db_pool.execute(INSERT_IMAGE, "crpa")
    assert await versions.read() == reads[0] + 1 and len(reads) == 2  # the next: a new read


async def test_a_request_never_joins_a_read_already_sent(
    db_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = page_cache.index_version
    answered = asyncio.Event()
    release = asyncio.Event()
    calls: list[int] = []

    async def held(conn: asyncpg.Connection) -> int:
        version = await read(conn)  # the snapshot is taken: the read was sent
        calls.append(version)
        if len(calls) == 1:
            answered.set()
            await release.wait()
        return version

    monkeypatch.setattr(page_cache, "index_version", held)
    versions = VersionReads(db_pool)
    first = asyncio.create_task(versions.read())
    await answered.wait()
    # a write commits, then a request asks: the read in flight cannot have seen the write
    await db_pool.execute(INSERT_IMAGE, "crpb")
    second = await asyncio.wait_for(versions.read(), 10)
    release.set()
    assert len(calls) == 2 and second == calls[0] + 1
    assert await first == calls[0]


async def test_a_failed_read_fails_its_requests_and_the_next_one_reads_again(
    db_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = page_cache.index_version
    failures = [asyncpg.PostgresError("the database went away")]

    async def failing(conn: asyncpg.Connection) -> int:
        if failures:
            raise failures.pop()
        return await read(conn)

    monkeypatch.setattr(page_cache, "index_version", failing)
    versions = VersionReads(db_pool)
    outcomes = await asyncio.gather(versions.read(), versions.read(), return_exceptions=True)
    assert all(isinstance(o, asyncpg.PostgresError) for o in outcomes)
    assert await versions.read() == await db_pool.fetchval(page_cache.SELECT_VERSION)


async def test_a_request_going_away_leaves_the_read_to_the_others(
    db_pool: asyncpg.Pool,
) -> None:
    versions = VersionReads(db_pool)
    leaving = asyncio.create_task(versions.read())
    staying = asyncio.create_task(versions.read())
    await asyncio.sleep(0)  # both asked
    leaving.cancel()
    assert await staying == await db_pool.fetchval(page_cache.SELECT_VERSION)
    with pytest.raises(asyncio.CancelledError):
        await leaving
