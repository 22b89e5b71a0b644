"""PostgreSQL killed while `mirror ingest --once` is mid-pass: a summary, each scope's
status, one line naming the database, exit 3; no traceback, no scope abandoned.

Each test kills a PostgreSQL of its own (never the session's shared server): every
postgres process of it gets SIGKILL while both walks wait, page 1 merged, for page 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import psutil
import pytest
from aiohttp import web

from mirror.dsn import DsnParts
from mirror.exit_codes import ExitCode
from mirror.ingest.leases import lease_holder
from mirror.ingest.loop import run_ingest_loop
from mirror.ingest.summary import IngestSummary
from mirror.model import Scope
from mirror.settings import Settings
from mirror.store.database import open_database
from mirror.store.embedded import EmbeddedPostgres
from mirror.upstream.client import UpstreamClient
from mirror.upstream.throttle import Throttle
from tests.integration.ingest_fake_upstream import FakeUpstream, make_image, serving

SCOPES = (Scope.parse("folder:f1"), Scope.parse("folder:f2"))
IMAGES = 3300  # f1 (reg1, reg2: 2,200) and f2 (reg3: 1,100) both span more than one page

pytestmark = pytest.mark.timeout(240)


class GatedUpstream(FakeUpstream):
    """Answers every scope's first page, then holds later pages until ``gate`` opens."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.held = 0  # requests for a later page waiting at the gate

    async def list_images(self, request: web.Request) -> web.Response:
        if request.query.get("pageToken"):
            self.held += 1
            await self.gate.wait()
        return await super().list_images(request)


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL for this test alone: it is going to be killed.

    Its data dir is not under pytest's tmp_path: another pytest run resets that
    tree to mode 0700, which the server's own system user then cannot enter.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="mirror-test-pg-"))
    server = EmbeddedPostgres(data_dir, delete_on_stop=True)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
async def gated() -> AsyncIterator[GatedUpstream]:
    upstream = GatedUpstream()
    for i in range(IMAGES):
        upstream.put(make_image(i, registry=("reg1", "reg2", "reg3")[i % 3]))
    async with serving(upstream):
        try:
            yield upstream
        finally:
            upstream.gate.set()


def kill_postgres(server: EmbeddedPostgres) -> int:
    """SIGKILL the postmaster and every backend of ``server``; returns how many died."""
    pid = int((server.pgdata / "postmaster.pid").read_text().split()[0])
    postmaster = psutil.Process(pid)
    processes = [postmaster, *postmaster.children(recursive=True)]
    for process in processes:
        # a backend may exit on its own first (it sees the postmaster die): dead either way
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    gone, alive = psutil.wait_procs(processes, timeout=30)
    assert not alive, alive
    return len(gone)


async def wait_mid_pass(dsn: str, upstream: GatedUpstream, ingest_pid: int) -> None:
    """Until both walks hold their lease, merged their first page and wait for the next."""
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(1200):
            if upstream.held == len(SCOPES) and await conn.fetchval(
                "SELECT to_regclass('images') IS NOT NULL"
            ):
                folders = await conn.fetchval("SELECT count(DISTINCT folder_id) FROM images")
                owners = await conn.fetch("SELECT lease_owner FROM scopes")
                holders = [await lease_holder(conn, scope) for scope in SCOPES]
                if (
                    folders == len(SCOPES)
                    and all(f":{ingest_pid}:" in (r["lease_owner"] or "") for r in owners)
                    and None not in holders
                ):
                    return
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise AssertionError("the ingest never got mid-pass")


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
async def test_postgres_killed_mid_pass_ends_in_a_summary_and_exit_3(
    own_postgres: EmbeddedPostgres, gated: GatedUpstream, as_json: bool
) -> None:
    dsn = own_postgres.dsn
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mirror",
        "ingest",
        "--once",
        *(["--json"] if as_json else []),
        *(arg for scope in SCOPES for arg in ("--scope", str(scope))),
        "--upstream-url",
        gated.url,
        "--database-url",
        dsn,
        "--log-level",
        "WARNING",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")},
    )
    try:
        await wait_mid_pass(dsn, gated, proc.pid)
        assert kill_postgres(own_postgres) >= 2  # the postmaster and the walks' backends
        gated.gate.set()
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = err.decode()
    assert proc.returncode == ExitCode.DATABASE == 3, stderr
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"mirror: database unavailable: PostgreSQL at {DsnParts.parse(dsn).describe()} "
        "stopped answering during the pass ("
    ), last
    assert last.endswith("); not every scope was walked"), last
    lines = out.decode().strip().splitlines()
    if as_json:
        summary = orjson.loads(lines[-1])
        assert summary["exitCode"] == 3 and summary["databaseError"]
        statuses = {s["scope"]: (s["status"], s["pages"] >= 1) for s in summary["scopes"]}
        assert statuses == {str(scope): ("failed", True) for scope in SCOPES}
    else:
        assert lines[-1].startswith("total: ") and lines[-1].endswith(", 2 error(s)")
        for scope, line in zip(SCOPES, lines[:-1], strict=True):
            assert line.startswith(f"{scope}: failed, 1 page(s), 1000 image(s), 1000 created")


async def test_the_ingest_loop_outlives_the_database_backs_off_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Continuous mode: PostgreSQL killed between passes, then started again on the same
    data dir. The loop never dies; it retries 1 s, 2 s, … apart, and walks again once
    the server is back."""
    data_dir = Path(tempfile.mkdtemp(prefix="mirror-test-pg-"))
    server = EmbeddedPostgres(data_dir)
    stop = asyncio.Event()
    summaries: list[IngestSummary] = []
    passed = asyncio.Condition()

    async def on_pass(summary: IngestSummary) -> None:
        async with passed:
            summaries.append(summary)
            passed.notify_all()

    seen = 0

    async def passes_until(check: Callable[[IngestSummary], bool]) -> None:
        """Until a pass after those already seen satisfies ``check``."""
        nonlocal seen

        def found() -> bool:
            nonlocal seen
            while seen < len(summaries):
                seen += 1
                if check(summaries[seen - 1]):
                    return True
            return False

        async with passed:
            await asyncio.wait_for(passed.wait_for(found), 120)

    caplog.set_level(logging.WARNING, logger="mirror.ingest.loop")
    try:
        dsn = await server.astart()
        settings = Settings.load(env={"MIRROR_DATABASE_URL": dsn})
        async with (
            serving(FakeUpstream()) as fake,
            open_database(settings) as pool,
            aiohttp.ClientSession() as session,
        ):
            for i in range(30):
                fake.put(make_image(i))
            upstream = settings.with_(upstream_url=fake.url, scopes=(SCOPES[0],))
            client = UpstreamClient(session, upstream, throttle=Throttle(10_000, 8))
            loop = asyncio.create_task(
                run_ingest_loop(pool, client, upstream, interval=0, stop=stop, on_pass=on_pass)
            )
            await passes_until(lambda s: s.exit_code is ExitCode.OK)

            kill_postgres(server)
            await passes_until(lambda s: s.exit_code is ExitCode.DATABASE)
            await passes_until(lambda s: s.exit_code is ExitCode.DATABASE)
            backoffs = [
                r.getMessage().rsplit("next try in ", 1)[1]
                for r in caplog.records
                if "next try in" in r.getMessage()
            ]
            assert backoffs[:2] == ["1s or later", "2s or later"]
            assert not loop.done()

            await server.astop()  # forgets the dead server (it is not running: nothing to stop)
            assert await EmbeddedPostgres(data_dir).astart() == dsn  # same socket: the pool's DSN
            await passes_until(lambda s: s.exit_code is ExitCode.OK)
            assert summaries[-1].scopes[0].images == 30

            stop.set()
            await asyncio.wait_for(loop, 60)  # ends cleanly: no exception
    finally:
        stop.set()
        await EmbeddedPostgres(data_dir, delete_on_stop=True).astop()
        shutil.rmtree(data_dir, ignore_errors=True)
