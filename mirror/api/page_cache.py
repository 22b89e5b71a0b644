"""List pages kept in memory for as long as the index has not changed.

Clients list the same pages again and again (a dashboard's first page, a CI job's
repository, each subscriber re-reading a listing after an event). A page is a
function of its query (scope, filter, order), its token, its size and the
index's rows; the index's version (``images_version``, sql/102) is the same in
two snapshots exactly when no write to ``images`` committed between them. So a
page read at a version answers the same request at the same version, byte for
byte, and a request pays (a share of) one read of a 16-row table instead of the
page's query.

The version is read before the page, by a query sent after the request arrived
(``VersionReads``: the requests that ask while a read waits for its connection
share it). A write committed before the request is in the version; one that
commits between the version and the page makes the page newer than its version,
and the version every later request reads is past it, so the entry is never used
(never stale). The first request that sees a new version empties the cache.
Entries are kept least recently used first, up to ``max_bytes`` of answers
(``MIRROR_API_PAGE_CACHE_MB``, 64 by default; 0: no cache, no version read). An
index from before sql/102 has no version: every page is read.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
from prometheus_client import Counter

from mirror.byte_lru import ByteLRU
from mirror.listing import ListRequest
from mirror.settings import Settings

# The sum over the slots: one read of a table of 16 rows, a page at most.
SELECT_VERSION = "SELECT sum(n)::bigint FROM images_version"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

LOOKUPS = Counter(
    "mirror_api_list_page_cache_lookups_total",
    "List pages looked up in the API's page cache, by result (hit or miss).",
    ("result",),
)

Key = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class Page:
    """One List page: its REST answer, the next page token ("" on the last) and where each
    image's JSON doc lies in the answer (so gRPC reads the docs from the same bytes)."""

    body: bytes
    token: str
    spans: tuple[tuple[int, int], ...]

    @property
    def docs(self) -> list[bytes]:
        return [self.body[start:end] for start, end in self.spans]


def _size(page: Page) -> int:
    return len(page.body) + 16 * len(page.spans) + 64


def page_key(request: ListRequest) -> Key:
    return request.query_key, request.page_token, request.page_size


class PageCache:
    """Pages by request, valid at one version of the index; pure bookkeeping, no I/O."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.version: int | None = None
        self._pages: ByteLRU[Key, Page] = ByteLRU(max_bytes)

    def __len__(self) -> int:
        return len(self._pages)

    @property
    def bytes(self) -> int:
        return self._pages.size

    def _at(self, version: int) -> bool:
        """Move to ``version`` if it is newer; whether the cache now holds that version."""
        if self.version is None or version > self.version:
            self._pages.clear()
            self.version = version
        return version == self.version

    def get(self, key: Key, version: int) -> Page | None:
        page = self._pages.get(key) if self._at(version) else None
        LOOKUPS.labels("hit" if page is not None else "miss").inc()
        return page

    def put(self, key: Key, version: int, page: Page) -> None:
        """Keep ``page``, read at ``version`` or later (never at an older one)."""
        if self._at(version):
            self._pages.put(key, page, _size(page))


def page_cache(settings: Settings) -> PageCache | None:
    """The cache ``MIRROR_API_PAGE_CACHE_MB`` asks for; None for 0 (every page read)."""
    if settings.api_page_cache_mb <= 0:
        return None
    return PageCache(settings.api_page_cache_mb * 1024 * 1024)


async def index_version(conn: asyncpg.Connection) -> int | None:
    """The index's version; None on an index from before sql/102 (``mirror db upgrade``)."""
    try:
        version: int = await conn.fetchval(SELECT_VERSION)
    except asyncpg.UndefinedTableError:
        return None
    return version


class VersionReads:
    """Reads of the index's version, shared by the requests that ask before a read is sent.

    A request needs a version read after it arrived: one whose query reaches the
    server later sees every write committed before the request (a Delete the
    client was told is done, say). So a request joins the read that is waiting for
    a connection, or starts the next one; it never joins a read already sent.
    Under load one read answers the Lists that arrived while the last was out.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._waiting: asyncio.Future[int | None] | None = None  # the next read, not sent yet
        self._reads: set[asyncio.Task[None]] = set()

    async def read(self) -> int | None:
        """The version (None: the index has none; read every page)."""
        waiting = self._waiting
        if waiting is None:
            loop = asyncio.get_running_loop()
            waiting = self._waiting = loop.create_future()
            task = loop.create_task(self._read(waiting), name="api: index version")
            self._reads.add(task)
            task.add_done_callback(self._reads.discard)
        # shielded: one caller going away (a closed connection) leaves the read to the others
        return await asyncio.shield(waiting)

    async def _read(self, result: asyncio.Future[int | None]) -> None:
        try:
            async with self._pool.acquire() as conn:
                if self._waiting is result:
                    self._waiting = None  # who asks from now on needs a later read
                version = await index_version(conn)
        except asyncio.CancelledError:
            if self._waiting is result:
                self._waiting = None
            result.cancel()
            raise
        except Exception as exc:
            if self._waiting is result:
                self._waiting = None
            result.set_exception(exc)
            result.exception()  # the callers see it; no "never retrieved" warning
            return
        result.set_result(version)
