"""The ingest against real PostgreSQL and a controllable fake upstream: the invariants
of ARCHITECTURE.md (1, 2, 4, 6, 7) and the behaviours issue 4 lists."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from mirror.ingest.leases import RunOutcome, ScopeLease, lease_holder
from mirror.ingest.loop import ingest_once
from mirror.ingest.merge import PageWriter
from mirror.ingest.staging import page_images
from mirror.ingest.summary import WalkStatus
from mirror.ingest.walker import PREFETCH
from mirror.model import Scope
from mirror.settings import Settings
from mirror.upstream.client import KnownPage, Page, RememberedNext, UpstreamClient
from tests.integration.ingest_fake_upstream import (
    FAST_RETRY,
    FakeUpstream,
    error,
    fast_client,
    make_image,
    serving,
)
from tests.integration.refcounts import ref_count_mismatches

FOLDER = Scope.parse("folder:f1")
REG1 = Scope.parse("registry:reg1")


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with serving(FakeUpstream()) as upstream:
        yield upstream


@pytest.fixture
async def client(fake: FakeUpstream) -> AsyncIterator[UpstreamClient]:
    async with fast_client(fake.url) as upstream_client:
        yield upstream_client


def populate(fake: FakeUpstream, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        fake.put(make_image(i, registry=("reg1", "reg2", "reg3")[i % 3]))


def in_folder(fake: FakeUpstream, folder: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in fake.images.items() if fake.folders[v["name"].split("/")[0]] == folder}


async def indexed(conn: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    return {
        r["id"]: orjson.loads(r["doc"])
        for r in await conn.fetch("SELECT id, image_doc(images) AS doc FROM images")
    }


async def events(conn: asyncpg.Connection, after: int = 0) -> list[tuple[str, str, Any]]:
    rows = await conn.fetch(
        "SELECT type, key, data::text AS data FROM outbox_events WHERE id > $1 ORDER BY id", after
    )
    return [(r["type"], r["key"], orjson.loads(r["data"])) for r in rows]


async def last_event_id(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox"))


async def row_versions(conn: asyncpg.Connection) -> dict[str, set[tuple[str, str, str]]]:
    """Every row's identity and version (xmin, ctid): any rewrite changes them."""
    out = {}
    for table, key in (
        ("images", "id"),
        ("blobs", "encode(digest, 'hex')"),
        ("outbox", "id::text"),
        ("tags", "repository_id || ':' || tag"),  # tag events' state (sql/070, 116)
        ("tag_repositories", "name"),
        ("image_registries", "name"),  # the registries' numbers (sql/120)
        ("stats_changes", "id::text"),  # the stats folder's change log (sql/080)
    ):
        rows = await conn.fetch(f"SELECT {key} AS k, xmin::text AS x, ctid::text AS c FROM {table}")
        out[table] = {(r["k"], r["x"], r["c"]) for r in rows}
    return out


async def check_ref_counts(conn: asyncpg.Connection) -> None:
    assert await ref_count_mismatches(conn) == 0


async def test_first_sync_equals_upstream_exactly(db_pool, fake, client) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    pages_before = sample("mirror_ingest_pages_total", scope="folder:f1")
    created_before = sample("mirror_ingest_changes_total", kind="created")
    populate(fake, 2500)
    summary = await ingest_once(db_pool, client, [FOLDER], page_size=1000)
    assert sample("mirror_ingest_pages_total", scope="folder:f1") == pages_before + 2
    assert sample("mirror_ingest_changes_total", kind="created") == created_before + summary.created
    assert sample("mirror_ingest_lag_seconds", scope="folder:f1") >= 0
    expected = in_folder(fake, "f1")
    assert summary.scopes[0].status is WalkStatus.COMPLETE
    assert (summary.images, summary.created, summary.pages) == (len(expected), len(expected), 2)
    async with db_pool.acquire() as conn:
        assert await indexed(conn) == expected
        raw = await conn.fetchval("SELECT image_doc(images) FROM images ORDER BY id LIMIT 1")
        first = min(expected)
        assert raw.encode() == orjson.dumps(expected[first])  # the upstream's JSON, byte for byte
        assert await conn.fetchval("SELECT count(*) FROM images WHERE folder_id = 'f1'") == len(
            expected
        )
        assert dict(await conn.fetch("SELECT registry_id, folder_id FROM registries")) == {
            "reg1": "f1",
            "reg2": "f1",
        }
        evs = await events(conn)
        created = [e for e in evs if e[0] == "registry.image.created"]
        assert sorted(k for _, k, _ in created) == sorted(expected)
        run_id = await conn.fetchval("SELECT id FROM sync_runs WHERE scope = 'folder:f1'")
        # the image, and the sync run that found it (who and why)
        assert all(data == expected[k] | {"runId": str(run_id)} for _, k, data in created)
        digests = {
            b["digest"] for img in expected.values() for b in [img["config"], *img["layers"]]
        }
        added = [k for t, k, _ in evs if t == "registry.blob.added"]
        assert sorted(added) == sorted(digests)
        await check_ref_counts(conn)
        run = await conn.fetchrow("SELECT * FROM sync_runs WHERE scope = 'folder:f1'")
        assert (run["status"], run["images"], run["created"]) == (
            "complete",
            len(expected),
            len(expected),
        )
        scope = await conn.fetchrow("SELECT * FROM scopes WHERE scope = 'folder:f1'")
        assert scope["last_complete_at"] is not None and scope["lease_owner"] is None


async def test_invariant_6_idempotent_ingest_unchanged_resync_writes_no_row(
    db_pool, fake, client
) -> None:  # type: ignore[no-untyped-def]
    populate(fake, 1200)
    await ingest_once(db_pool, client, [FOLDER, REG1], page_size=500)
    async with db_pool.acquire() as conn:
        before = await row_versions(conn)
    summary = await ingest_once(db_pool, client, [FOLDER, REG1], page_size=500)
    assert [r.status for r in summary.scopes] == [WalkStatus.COMPLETE] * 2
    assert (summary.created, summary.updated, summary.deleted) == (0, 0, 0)
    assert summary.images > 0
    async with db_pool.acquire() as conn:
        after = await row_versions(conn)
        assert after == before  # not one row of images, blobs, outbox, tags or stats log


async def test_pushes_retags_and_deletes_give_exactly_the_right_events(
    db_pool, fake, client
) -> None:  # type: ignore[no-untyped-def]
    populate(fake, 30)
    await ingest_once(db_pool, client, [FOLDER], page_size=7)
    async with db_pool.acquire() as conn:
        mark = await last_event_id(conn)
    ids = sorted(in_folder(fake, "f1"))
    retagged = fake.images[ids[0]] | {"tags": ["v0", "stable"]}
    fake.put(retagged)
    fake.delete(ids[1])
    pushed = make_image(1000, registry="reg1", layers=(1, 2, 999))
    fake.put(pushed)
    summary = await ingest_once(db_pool, client, [FOLDER], page_size=7)
    assert (summary.created, summary.updated, summary.deleted) == (1, 1, 1)
    async with db_pool.acquire() as conn:
        evs = await events(conn, mark)
        image_events = [(t, k) for t, k, _ in evs if t.startswith("registry.image.")]
        assert sorted(image_events) == sorted(
            [
                ("registry.image.created", pushed["id"]),
                ("registry.image.updated", ids[0]),
                ("registry.image.deleted", ids[1]),
            ]
        )
        updated = next(d for t, _, d in evs if t == "registry.image.updated")
        assert updated == {
            "image": retagged,
            "changes": {"tagsAdded": ["stable"], "tagsRemoved": [], "fields": ["tags"]},
            "runId": updated["runId"],
        }
        assert (
            await conn.fetchval("SELECT scope FROM sync_runs WHERE id = $1", int(updated["runId"]))
            == "folder:f1"
        )
        deleted = next(d for t, _, d in evs if t == "registry.image.deleted")
        assert deleted["reason"] == "upstream-gone" and deleted["image"]["id"] == ids[1]
        blob_events = {(t, k) for t, k, _ in evs if t.startswith("registry.blob.")}
        assert ("registry.blob.added", f"sha256:a{999:063x}") in blob_events
        assert ("registry.blob.added", pushed["config"]["digest"]) in blob_events
        # the deleted image's own config is referenced by nobody else
        assert ("registry.blob.orphaned", f"sha256:c{int(ids[1][3:]):063x}") in blob_events
        assert await indexed(conn) == in_folder(fake, "f1")
        await check_ref_counts(conn)


async def test_invariant_1_no_false_deletions_when_a_walk_fails_midway(
    db_pool, fake, client
) -> None:  # type: ignore[no-untyped-def]
    populate(fake, 60)
    await ingest_once(db_pool, client, [FOLDER], page_size=10)
    victim = sorted(in_folder(fake, "f1"))[-1]
    fake.delete(victim)  # really gone upstream, but the walk will not finish

    def storm(call: int) -> Any:
        return error(503, 14, "unavailable") if call >= 3 else None

    fake.list_calls = 0
    fake.before_list = storm
    summary = await ingest_once(db_pool, client, [FOLDER], page_size=10)
    result = summary.scopes[0]
    assert result.status is WalkStatus.FAILED and summary.failed
    assert result.deleted == 0 and fake.get_calls == 0
    async with db_pool.acquire() as conn:
        assert victim in await indexed(conn)
        run = await conn.fetchrow("SELECT status, error FROM sync_runs ORDER BY id DESC LIMIT 1")
        assert run["status"] == "failed" and "503" in run["error"]
        assert await conn.fetchval("SELECT last_error FROM scopes WHERE scope = 'folder:f1'")
    # the storm passes: the next run converges
    fake.before_list = None
    summary = await ingest_once(db_pool, client, [FOLDER], page_size=10)
    assert summary.scopes[0].status is WalkStatus.COMPLETE and summary.deleted == 1
    async with db_pool.acquire() as conn:
        assert await indexed(conn) == in_folder(fake, "f1")


async def test_invariant_1_no_false_deletions_under_offset_page_shifts(
    db_pool, fake, client
) -> None:  # type: ignore[no-untyped-def]
    populate(fake, 90)
    await ingest_once(db_pool, client, [FOLDER], page_size=10)
    ids = sorted(in_folder(fake, "f1"))
    early = ids[:5]  # deleted while the walk is past them: later pages shift left by 5

    def delete_during_walk(call: int) -> None:
        if call == 3:
            fake.delete(*early)

    fake.list_calls = 0
    fake.before_list = delete_during_walk
    summary = await ingest_once(db_pool, client, [FOLDER], page_size=10)
    result = summary.scopes[0]
    assert result.status is WalkStatus.COMPLETE
    # the 5 skipped by the shift were missed by the walk, confirmed present upstream and stay;
    # the 5 deleted were seen before they went: the next complete walk removes them
    assert result.deleted == 0 and result.anomalies == 5
    async with db_pool.acquire() as conn:
        assert set(await indexed(conn)) == set(ids)
    fake.before_list = None
    summary = await ingest_once(db_pool, client, [FOLDER], page_size=10)
    assert (summary.deleted, summary.anomalies) == (5, 0)
    async with db_pool.acquire() as conn:
        assert await indexed(conn) == in_folder(fake, "f1")
        evs = await events(conn)
        deleted = sorted(k for t, k, _ in evs if t == "registry.image.deleted")
        assert deleted == sorted(early)


async def test_429_storm_is_ridden_out(db_pool, fake, client) -> None:  # type: ignore[no-untyped-def]
    populate(fake, 40)
    throttled = {"n": 0}

    def storm(call: int) -> Any:
        if call >= 2 and throttled["n"] < 6:  # six 429s in a row after the first page
            throttled["n"] += 1
            return error(429, 8, "Too many requests", {"Retry-After": "0"})
        return None

    fake.before_list = storm
    summary = await ingest_once(db_pool, client, [FOLDER], page_size=5)
    assert summary.scopes[0].status is WalkStatus.COMPLETE and throttled["n"] == 6
    async with db_pool.acquire() as conn:
        assert await indexed(conn) == in_folder(fake, "f1")


async def test_invariant_2_index_change_and_event_commit_together(db_pool, fake, client) -> None:  # type: ignore[no-untyped-def]
    populate(fake, 20)
    async with db_pool.acquire() as conn:
        await conn.execute(
            """CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'outbox refused'; END $$;
               CREATE TRIGGER refuse BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse();"""
        )
    summary = await ingest_once(db_pool, client, [FOLDER], page_size=5)
    assert summary.scopes[0].status is WalkStatus.FAILED
    async with db_pool.acquire() as conn:
        # the events could not be written, so neither was the change
        for table in ("images", "blobs", "outbox"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0
        await conn.execute("DROP TRIGGER refuse ON outbox")
    summary = await ingest_once(db_pool, client, [FOLDER], page_size=5)
    assert summary.scopes[0].status is WalkStatus.COMPLETE
    async with db_pool.acquire() as conn:
        images = await indexed(conn)
        created = {k for t, k, _ in await events(conn) if t == "registry.image.created"}
        assert created == set(images) == set(in_folder(fake, "f1"))


async def test_invariant_4_dedup_by_digest_not_blob_id(db_pool, fake, client) -> None:  # type: ignore[no-untyped-def]
    # the same layer digest under different blob ids in two registries
    a = make_image(1, registry="reg1", layers=(7,))
    b = make_image(2, registry="reg2", layers=(7,))
    assert a["layers"][0]["id"] != b["layers"][0]["id"]
    fake.put(a, b)
    await ingest_once(db_pool, client, [FOLDER])
    async with db_pool.acquire() as conn:
        digest = a["layers"][0]["digest"]
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM blobs WHERE digest = mirror_digest_key($1)", digest
            )
            == 1
        )
        assert (
            await conn.fetchval(
                "SELECT ref_count FROM blobs WHERE digest = mirror_digest_key($1)", digest
            )
            == 2
        )
        added = [k for t, k, _ in await events(conn) if t == "registry.blob.added" and k == digest]
        assert added == [digest]
    fake.delete(a["id"])
    await ingest_once(db_pool, client, [FOLDER])
    async with db_pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "SELECT ref_count FROM blobs WHERE digest = mirror_digest_key($1)", digest
            )
            == 1
        )
        assert not [
            k for t, k, _ in await events(conn) if t == "registry.blob.orphaned" and k == digest
        ]


class CountingSource:
    """A PageSource generating pages lazily and recording how far it ran ahead of the merge."""

    def __init__(self, pages: int, page_size: int) -> None:
        self.pages, self.page_size = pages, page_size
        self.produced = 0
        self.consumed = 0
        self.max_lead = 0
        self.closed = False  # the walk closed the pages (their generator's finally ran)
        self.handed_out: list[AsyncGenerator[Page, None]] = []

    def iter_pages(
        self,
        scope: Scope,
        page_size: int = 1000,
        *,
        known: KnownPage | None = None,
        remembered: RememberedNext | None = None,
    ) -> AsyncGenerator[Page, None]:
        pages = self._pages()
        self.handed_out.append(pages)  # held: only an explicit close ends it early
        return pages

    async def _pages(self) -> AsyncGenerator[Page, None]:
        try:
            for p in range(self.pages):
                images = [make_image(p * self.page_size + i) for i in range(self.page_size)]
                self.produced += 1
                self.max_lead = max(self.max_lead, self.produced - self.consumed)
                yield Page(images, "" if p == self.pages - 1 else str(p + 1), 0)
        finally:
            self.closed = True

    async def get_image(self, image_id: str) -> dict[str, Any] | None:
        return None


class CountingProgress:
    def __init__(self, source: CountingSource, stop_after: int = 0) -> None:
        self.source = source
        self.stop_after = stop_after
        self.stop = asyncio.Event()

    def start(self, scope: str, expected: int | None) -> None:
        pass

    def advance(self, scope: str, images: int) -> None:
        self.source.consumed += 1
        if self.source.consumed == self.stop_after:
            self.stop.set()

    def finish(self, scope: str, status: str) -> None:
        pass


async def test_invariant_7_bounded_memory_walk_streams_pages(db_pool) -> None:  # type: ignore[no-untyped-def]
    source = CountingSource(pages=40, page_size=50)
    summary = await ingest_once(
        db_pool, source, [REG1], page_size=50, progress=CountingProgress(source)
    )
    assert summary.images == 2000 and source.consumed == 40
    # never more than the prefetch queue, the page being merged and the one being produced
    assert source.max_lead <= PREFETCH + 2
    assert source.closed


class AddingSource(CountingSource):
    """reg1's pages; before the second page of its first walk, another writer indexes an
    image of reg1 that the source never lists and whose Get says NOT_FOUND."""

    def __init__(self, pool: asyncpg.Pool, pages: int, page_size: int) -> None:
        super().__init__(pages, page_size)
        self.pool = pool
        self.extra = make_image(10**6)
        self.gets: list[str] = []
        self.walks = 0

    async def _pages(self) -> AsyncGenerator[Page, None]:
        async for page in super()._pages():
            if self.walks == 1 and self.produced == 2:
                async with self.pool.acquire() as conn:
                    other = PageWriter(conn)
                    await other.prepare()
                    await other.apply(page_images([self.extra]))
            yield page

    def iter_pages(self, *args: Any, **kwargs: Any) -> AsyncGenerator[Page, None]:
        self.walks += 1
        self.produced = self.consumed = 0
        return super().iter_pages(*args, **kwargs)

    async def get_image(self, image_id: str) -> dict[str, Any] | None:
        self.gets.append(image_id)
        return None


async def test_the_first_walk_of_an_empty_scope_sweeps_nothing(db_pool) -> None:  # type: ignore[no-untyped-def]
    # Its first mirror: every image of the scope the index holds at its end is one it
    # listed, or one another writer added meanwhile; the next walk checks those.
    source = AddingSource(db_pool, pages=4, page_size=50)
    first = await ingest_once(db_pool, source, [REG1], page_size=50)
    extra = source.extra["id"]
    assert first.scopes[0].status is WalkStatus.COMPLETE and first.images == 200
    assert source.gets == [] and first.deleted == 0
    assert await db_pool.fetchval("SELECT count(*) FROM images WHERE id = $1", extra) == 1
    second = await ingest_once(db_pool, source, [REG1], page_size=50)
    assert source.walks == 2 and source.gets == [extra] and second.deleted == 1
    assert await db_pool.fetchval("SELECT count(*) FROM images WHERE id = $1", extra) == 0


async def test_a_walk_stopped_midway_closes_its_pages(db_pool) -> None:  # type: ignore[no-untyped-def]
    # The client's pages asked for ahead are cancelled when the pages are closed
    # (UpstreamClient.iter_pages): a walk that stops closes them before it returns.
    source = CountingSource(pages=40, page_size=50)
    progress = CountingProgress(source, stop_after=5)
    summary = await ingest_once(
        db_pool, source, [REG1], page_size=50, progress=progress, stop=progress.stop
    )
    assert summary.scopes[0].status is WalkStatus.CANCELLED
    assert source.produced < 40 and source.closed


async def test_two_concurrent_ingests_on_the_same_scopes_write_each_event_once(
    db_pool, fake, client
) -> None:  # type: ignore[no-untyped-def]
    populate(fake, 600)
    scopes = [FOLDER, REG1, Scope.parse("repository:reg1/app1")]
    first, second = await asyncio.gather(
        ingest_once(db_pool, client, scopes, owner="a", page_size=50),
        ingest_once(db_pool, client, scopes, owner="b", page_size=50),
    )
    statuses = [r.status for r in first.scopes + second.scopes]
    assert WalkStatus.FAILED not in statuses
    async with db_pool.acquire() as conn:
        assert await indexed(conn) == in_folder(fake, "f1")
        evs = await events(conn)
        keys = [(t, k) for t, k, _ in evs]
        assert len(keys) == len(set(keys))  # no duplicate event
        assert {k for t, k in keys if t == "registry.image.created"} == set(in_folder(fake, "f1"))
        await check_ref_counts(conn)


async def test_overlapping_scopes_without_leases_race_safely(db_pool, fake, client) -> None:  # type: ignore[no-untyped-def]
    """Folder and registry walks of the same images at once: row locks and the
    compare-and-set on content_hash leave one event per change."""
    populate(fake, 600)
    await asyncio.gather(
        ingest_once(db_pool, client, [FOLDER], owner="a", page_size=40),
        ingest_once(db_pool, client, [REG1], owner="b", page_size=40),
        ingest_once(db_pool, client, [Scope.parse("registry:reg2")], owner="c", page_size=40),
    )
    ids = sorted(in_folder(fake, "f1"))
    for image_id in ids[::7]:  # a tag names one image of a repository, as upstream
        fake.put(fake.images[image_id] | {"tags": [f"moved-{image_id}"]})
    for image_id in ids[1::11]:
        fake.delete(image_id)
    async with db_pool.acquire() as conn:
        mark = await last_event_id(conn)
    await asyncio.gather(
        ingest_once(db_pool, client, [FOLDER], owner="a", page_size=40),
        ingest_once(db_pool, client, [REG1], owner="b", page_size=40),
        ingest_once(db_pool, client, [Scope.parse("registry:reg2")], owner="c", page_size=40),
    )
    async with db_pool.acquire() as conn:
        assert await indexed(conn) == in_folder(fake, "f1")
        keys = [(t, k) for t, k, _ in await events(conn, mark)]
        assert len(keys) == len(set(keys))
        assert sum(1 for t, _ in keys if t == "registry.image.updated") == len(
            [i for i in ids[::7] if i in fake.images]
        )
        assert sum(1 for t, _ in keys if t == "registry.image.deleted") == len(ids[1::11])
        # folder_id is kept when a registry walk touches an image a folder walk stamped
        assert await conn.fetchval("SELECT count(*) FROM images WHERE folder_id IS NULL") == 0
        await check_ref_counts(conn)


async def test_lease_held_elsewhere_skips_the_scope(db_pool, fake, client) -> None:  # type: ignore[no-untyped-def]
    populate(fake, 10)
    async with db_pool.acquire() as conn:
        lease = await ScopeLease.take(conn, FOLDER, "other")
        assert lease is not None
        assert await lease_holder(conn, FOLDER) == conn.get_server_pid()
        summary = await ingest_once(db_pool, client, [FOLDER])
        assert summary.scopes[0].status is WalkStatus.SKIPPED
        assert await conn.fetchval("SELECT count(*) FROM images") == 0
        await lease.finish(RunOutcome("cancelled", 0, 0, 0, 0, 0, 0, 0.0))
        assert await lease_holder(conn, FOLDER) is None
    summary = await ingest_once(db_pool, client, [FOLDER])
    assert summary.scopes[0].status is WalkStatus.COMPLETE


async def test_a_row_lease_without_its_lock_does_not_block_the_scope(db_pool, fake, client) -> None:  # type: ignore[no-untyped-def]
    """What a walker killed mid-walk leaves: a lease row still in the future, a run
    still running, and no session holding the lock. The scope is walked at once."""
    populate(fake, 10)
    async with db_pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO scopes (scope, lease_owner, lease_until) VALUES ('folder:f1', 'dead', now() + interval '1 hour')"
        )
        await conn.execute("INSERT INTO sync_runs (scope, generation) VALUES ('folder:f1', 0)")
    summary = await ingest_once(db_pool, client, [FOLDER])
    assert summary.scopes[0].status is WalkStatus.COMPLETE
    async with db_pool.acquire() as conn:
        assert await conn.fetchval("SELECT lease_owner FROM scopes") is None
        runs = [r["status"] for r in await conn.fetch("SELECT status FROM sync_runs ORDER BY id")]
        assert runs == ["failed", "complete"]


async def test_stop_between_pages_cancels_without_deleting(db_pool, fake, client) -> None:  # type: ignore[no-untyped-def]
    populate(fake, 60)
    await ingest_once(db_pool, client, [FOLDER], page_size=5)
    fake.delete(sorted(in_folder(fake, "f1"))[0])
    stop = asyncio.Event()

    def stop_midway(call: int) -> None:
        if call == 3:
            stop.set()

    fake.list_calls = 0
    fake.before_list = stop_midway
    summary = await ingest_once(db_pool, client, [FOLDER], page_size=5, stop=stop)
    assert summary.scopes[0].status is WalkStatus.CANCELLED and not summary.failed
    assert summary.deleted == 0
    async with db_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM images") == len(in_folder(fake, "f1")) + 1
        assert (
            await conn.fetchval("SELECT status FROM sync_runs ORDER BY id DESC LIMIT 1")
            == "cancelled"
        )


async def test_run_ingest_loop_repeats_passes_until_stopped(db_pool, fake, client) -> None:  # type: ignore[no-untyped-def]
    from mirror.ingest.loop import run_ingest_loop
    from mirror.ingest.summary import IngestSummary

    populate(fake, 30)
    stop = asyncio.Event()
    passes: list[IngestSummary] = []

    def on_pass(summary: IngestSummary) -> None:
        passes.append(summary)
        if len(passes) == 1:
            fake.put(make_image(5000, registry="reg1"))
        if len(passes) == 3:
            stop.set()

    settings = Settings.load(env={"MIRROR_SCOPES": "folder:f1"})
    await asyncio.wait_for(
        run_ingest_loop(db_pool, client, settings, interval=0, stop=stop, on_pass=on_pass),
        timeout=60,
    )
    assert [p.created for p in passes] == [len(in_folder(fake, "f1")) - 1, 1, 0]


async def test_invariant_1_failing_gets_delete_nothing_and_stop_after_a_batch(
    db_pool, fake, client
) -> None:  # type: ignore[no-untyped-def]
    populate(fake, 900)
    await ingest_once(db_pool, client, [FOLDER], page_size=1000)
    gone = sorted(in_folder(fake, "f1"))
    fake.delete(*gone)  # the List answers empty: every indexed image is a candidate
    fake.before_get = lambda image_id: error(503, 14, "unavailable")
    fake.get_calls = 0
    # the guard off (an emptied scope is suspect by default: see the next test), so
    # that the checks are sent
    summary = await ingest_once(db_pool, client, [FOLDER], page_size=1000, delete_guard=0)
    result = summary.scopes[0]
    assert result.status is WalkStatus.FAILED and result.deleted == 0
    assert result.error is not None and "no well-formed answer" in result.error
    # one batch of checks (each retried), not one per candidate
    assert fake.get_calls == 200 * FAST_RETRY.max_attempts
    async with db_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM images") == len(gone)
    fake.before_get = None
    summary = await ingest_once(db_pool, client, [FOLDER], page_size=1000, delete_guard=0)
    assert summary.deleted == len(gone)


async def test_invariant_1_a_walk_that_lost_most_of_its_scope_is_suspect_and_sends_no_get(
    db_pool, fake, client
) -> None:  # type: ignore[no-untyped-def]
    populate(fake, 300)
    await ingest_once(db_pool, client, [FOLDER], page_size=50)
    ids = sorted(in_folder(fake, "f1"))
    fake.delete(*ids[: len(ids) * 2 // 3])  # two thirds really gone upstream
    fake.get_calls = 0
    summary = await ingest_once(db_pool, client, [FOLDER], page_size=50)
    result = summary.scopes[0]
    assert result.status is WalkStatus.FAILED and result.deleted == 0
    assert result.suspect is not None and "MIRROR_DELETE_GUARD" in result.suspect
    assert result.unchecked == len(ids) * 2 // 3
    assert fake.get_calls == 0  # no confirmation Get at all
    async with db_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM images") == len(ids)
        run = await conn.fetchrow(
            "SELECT suspect, unchecked, error FROM sync_runs ORDER BY id DESC"
        )
        assert run["suspect"] == result.suspect and run["unchecked"] == result.unchecked
        assert "suspect walk" in run["error"]
    # the operator confirms the loss is real: the guard lowered, the Gets go out, capped
    summary = await ingest_once(
        db_pool, client, [FOLDER], page_size=50, delete_guard=0.25, confirm_max=60
    )
    result = summary.scopes[0]
    assert result.status is WalkStatus.COMPLETE and result.suspect is None
    assert (result.deleted, result.unchecked) == (60, len(ids) * 2 // 3 - 60)
    assert fake.get_calls == 60
    summary = await ingest_once(db_pool, client, [FOLDER], page_size=50, delete_guard=0.25)
    async with db_pool.acquire() as conn:
        assert await indexed(conn) == in_folder(fake, "f1")
