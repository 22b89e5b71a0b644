"""`mirror ingest` as a process: --once --json, SIGTERM mid-walk, a killed walker."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import orjson
import pytest

from mirror.exit_codes import ExitCode
from mirror.ingest.leases import RunOutcome, ScopeLease, lease_holder
from mirror.ingest.loop import ingest_once
from mirror.model import Scope
from mirror.settings import Settings
from mirror.stats.queries import fetch_stats
from mirror.upstream.client import UpstreamClient
from mirror.upstream.throttle import Throttle
from tests.integration.ingest_fake_upstream import FakeUpstream, make_image, serving

FOLDER = Scope.parse("folder:f1")
FOLDER2 = Scope.parse("folder:f2")
SELECT_LEASE_OWNER = "SELECT lease_owner FROM scopes WHERE scope = $1"
SELECT_BACKEND_CLIENT = "SELECT backend_start FROM pg_stat_activity WHERE pid = $1"


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with serving(FakeUpstream()) as upstream:
        for i in range(3300):
            upstream.put(make_image(i, registry=("reg1", "reg2", "reg3")[i % 3]))
        yield upstream


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}


async def start_ingest(
    fake: FakeUpstream, database_url: str, *args: str
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mirror",
        "ingest",
        "--scope",
        "folder:f1",
        "--upstream-url",
        fake.url,
        "--database-url",
        database_url,
        "--log-level",
        "WARNING",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
    )


async def index_ids(db_pool: asyncpg.Pool) -> set[str]:
    async with db_pool.acquire() as conn:
        return {r["id"] for r in await conn.fetch("SELECT id FROM images")}


async def sync_in_process(db_pool: asyncpg.Pool, fake: FakeUpstream) -> None:
    settings = Settings.load(env={}, upstream_url=fake.url)
    async with aiohttp.ClientSession() as session:
        client = UpstreamClient(session, settings, throttle=Throttle(10_000, 8))
        summary = await ingest_once(db_pool, client, [FOLDER])
    assert not summary.failed


def in_f1(fake: FakeUpstream) -> set[str]:
    return {k for k, v in fake.images.items() if v["name"].split("/")[0] in ("reg1", "reg2")}


async def test_ingest_once_json_prints_the_summary_and_exits_zero(
    fake, database_url, db_pool
) -> None:  # type: ignore[no-untyped-def]
    proc = await start_ingest(fake, database_url, "--once", "--json")
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()
    summary = orjson.loads(out.splitlines()[-1])
    assert {
        "images",
        "created",
        "updated",
        "deleted",
        "pages",
        "seconds",
        "errors",
    } <= summary.keys()
    assert summary["images"] == summary["created"] == len(in_f1(fake))
    assert (summary["pages"], summary["errors"], summary["exitCode"]) == (3, 0, 0)
    assert await index_ids(db_pool) == in_f1(fake)
    # the stats were folded to the end before the exit: `mirror stats` now is exact
    stats = await fetch_stats(db_pool, None)
    assert stats.images == len(in_f1(fake))
    assert stats.freshness is not None and stats.freshness.pending_changes == 0
    assert stats.freshness.event_id == await db_pool.fetchval("SELECT max(id) FROM outbox")


async def test_ingest_once_exits_non_zero_when_a_scope_fails(database_url) -> None:  # type: ignore[no-untyped-def]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mirror",
        "ingest",
        "--once",
        "--json",
        "--scope",
        "registry:r1",
        "--upstream-url",
        "http://127.0.0.1:9",
        "--database-url",
        database_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env() | {"MIRROR_UPSTREAM_RPS": "1000"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=400)
    assert proc.returncode == ExitCode.FAILED == 1
    summary = orjson.loads(out.splitlines()[-1])
    assert summary["errors"] == 1 and summary["scopes"][0]["status"] == "failed"
    assert (
        err.decode()
        .strip()
        .splitlines()[-1]
        .startswith("mirror: not every scope was walked: registry:r1 failed (")
    )


async def test_ingest_without_scopes_is_a_configuration_error(database_url) -> None:  # type: ignore[no-untyped-def]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mirror",
        "ingest",
        "--once",
        "--database-url",
        database_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == ExitCode.CONFIG == 2 and b"MIRROR_SCOPES" in err


async def wait_for_pages(db_pool: asyncpg.Pool, fake: FakeUpstream, calls: int) -> None:
    for _ in range(600):
        if fake.list_calls >= calls:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the ingest process never listed")


async def wait_for_lease(db_pool: asyncpg.Pool, scope: Scope, pid: int) -> int:
    """Until process ``pid`` holds the scope's lease: its owner id in the scopes row and
    its session holding the lock (pg_locks). Returns the holding backend's pid."""
    async with db_pool.acquire() as conn:
        for _ in range(600):
            owner = await conn.fetchval(SELECT_LEASE_OWNER, str(scope))
            backend = await lease_holder(conn, scope)
            if owner is not None and f":{pid}:" in owner and backend is not None:
                holder_client = await conn.fetchval(SELECT_BACKEND_CLIENT, backend)
                assert holder_client is not None  # a live session of another client
                return backend
            await asyncio.sleep(0.05)
    raise AssertionError(f"process {pid} never held the lease on {scope}")


async def test_sigterm_mid_walk_finishes_the_page_and_exits_cleanly(
    fake, database_url, db_pool
) -> None:  # type: ignore[no-untyped-def]
    await sync_in_process(db_pool, fake)
    gone = sorted(in_f1(fake))[0]
    fake.delete(gone)
    fake.list_calls = 0
    fake.list_delay = 0.5
    proc = await start_ingest(fake, database_url, "--once", "--json")
    await wait_for_pages(db_pool, fake, 2)
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == ExitCode.CANCELLED == 5, err.decode()
    assert err.decode().strip().splitlines()[-1] == (
        "mirror: not every scope was walked: folder:f1 cancelled (stopped by a signal)"
    )
    summary = orjson.loads(out.splitlines()[-1])
    assert summary["scopes"][0]["status"] == "cancelled" and summary["deleted"] == 0
    assert summary["exitCode"] == 5
    assert gone in await index_ids(db_pool)
    async with db_pool.acquire() as conn:
        run = await conn.fetchrow("SELECT status FROM sync_runs ORDER BY id DESC LIMIT 1")
        assert run["status"] == "cancelled"
        assert await conn.fetchval("SELECT lease_owner FROM scopes") is None


async def test_invariant_1_killed_ingest_process_deletes_nothing_and_next_run_converges(
    fake, database_url, db_pool
) -> None:  # type: ignore[no-untyped-def]
    await sync_in_process(db_pool, fake)
    gone = sorted(in_f1(fake))[-1]
    fake.delete(gone)
    fake.put(make_image(99_999, registry="reg1"))
    fake.list_calls = 0
    fake.list_delay = 0.5
    proc = await start_ingest(fake, database_url, "--once")
    await wait_for_pages(db_pool, fake, 2)
    await wait_for_lease(db_pool, FOLDER, proc.pid)
    proc.kill()
    await asyncio.wait_for(proc.wait(), timeout=30)
    assert gone in await index_ids(db_pool)
    async with db_pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT status FROM sync_runs ORDER BY id DESC LIMIT 1")
            == "running"
        )
        # the lease row still names the dead walker, for another two minutes
        assert await conn.fetchval("SELECT lease_until > now() + interval '60 s' FROM scopes")
    fake.list_delay = 0
    await sync_in_process(db_pool, fake)
    assert await index_ids(db_pool) == in_f1(fake)
    async with db_pool.acquire() as conn:
        statuses = [
            r["status"] for r in await conn.fetch("SELECT status FROM sync_runs ORDER BY id")
        ]
        assert statuses == ["complete", "failed", "complete"]
        deleted = await conn.fetch(
            "SELECT key FROM outbox_events WHERE type = 'registry.image.deleted'"
        )
        assert [r["key"] for r in deleted] == [gone]


async def test_kill_9_frees_the_lease_at_once_for_the_next_ingest(
    fake, database_url, db_pool
) -> None:  # type: ignore[no-untyped-def]
    """A walker killed while it holds both scopes' leases: the next `--once` walks both,
    now, although the dead walker's lease rows say they are held for two more minutes."""
    fake.list_delay = 0.5
    proc = await start_ingest(fake, database_url, "--once", "--scope", "folder:f2")
    backends = [await wait_for_lease(db_pool, scope, proc.pid) for scope in (FOLDER, FOLDER2)]
    proc.kill()
    assert await asyncio.wait_for(proc.wait(), timeout=30) == -signal.SIGKILL
    async with db_pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM scopes WHERE lease_until > now() + interval '60 s'"
            )
            == 2
        )
    fake.list_delay = 0
    proc = await start_ingest(fake, database_url, "--once", "--json", "--scope", "folder:f2")
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == ExitCode.OK, err.decode()
    summary = orjson.loads(out.splitlines()[-1])
    assert {s["scope"]: s["status"] for s in summary["scopes"]} == {
        "folder:f1": "complete",
        "folder:f2": "complete",
    }
    assert await index_ids(db_pool) == set(fake.images)
    async with db_pool.acquire() as conn:
        for backend in backends:  # the dead walker's sessions are gone
            assert await conn.fetchval(SELECT_BACKEND_CLIENT, backend) is None
        runs = await conn.fetch("SELECT scope, status FROM sync_runs ORDER BY id")
        assert sorted((r["scope"], r["status"]) for r in runs) == [
            ("folder:f1", "complete"),
            ("folder:f1", "failed"),
            ("folder:f2", "complete"),
            ("folder:f2", "failed"),
        ]


async def test_a_lease_held_by_a_live_ingest_exits_4(fake, database_url, db_pool) -> None:  # type: ignore[no-untyped-def]
    async with db_pool.acquire() as conn:
        lease = await ScopeLease.take(conn, FOLDER, "another-ingest")
        assert lease is not None
        proc = await start_ingest(fake, database_url, "--once", "--json", "--scope", "folder:f2")
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
        await lease.finish(RunOutcome("cancelled", 0, 0, 0, 0, 0, 0, 0.0))
    assert proc.returncode == ExitCode.HELD_ELSEWHERE == 4, err.decode()
    summary = orjson.loads(out.splitlines()[-1])
    assert {s["scope"]: s["status"] for s in summary["scopes"]} == {
        "folder:f1": "skipped",
        "folder:f2": "complete",
    }
    assert summary["exitCode"] == 4
    assert err.decode().strip().splitlines()[-1] == (
        "mirror: not every scope was walked: folder:f1 skipped "
        "(its lease is held by another ingest process)"
    )
