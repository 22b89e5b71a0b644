"""The head-watch: new images seen within seconds, between full walks.

A full walk of a million images takes minutes, so a push would wait that long
for its ``registry.image.created``. Every ``MIRROR_HEAD_INTERVAL`` seconds
(default 5; 0 turns it off) the head-watch asks each scope for its newest
images (List pages of 100, ``orderBy=created_at desc``, until a page holds an
image the index already has, at most ``MAX_PAGES``), keeps those the index
lacks, and merges them at once, with
their events (``data.via = "head-watch"``), through the walk's own merge
(``PageWriter``).

It only ever records images the index lacks: updates and deletions stay with
the full walk. The two never report an image twice: the merge's upsert is a
compare-and-set on the content hash, so whichever of them inserts the image
writes its one ``registry.image.created`` and the other finds nothing to do.
An image the head-watch added while a walk was passing is not in that walk's
seen set; its deletion check then finds it upstream (counted as a paging
anomaly), never deletes it. Scopes without a complete walk yet are left to the
first mirror. An upstream error skips the scope for that round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import asyncpg
from prometheus_client import Counter

from mirror.errors import UpstreamError
from mirror.ingest.merge import PageWriter
from mirror.ingest.staging import MalformedImage, page_images
from mirror.model import Scope, ScopeKind
from mirror.upstream.client import Page

log = logging.getLogger(__name__)

HEAD_PAGE_SIZE = 100
MAX_PAGES = 10  # a burst of more pushes than this between rounds is left to the walk
ORDER_NEWEST_FIRST = "created_at desc"
ORIGIN = {"via": "head-watch"}

SELECT_KNOWN = "SELECT id FROM images WHERE id = ANY($1::text[])"
SELECT_WALKED = (
    "SELECT scope FROM scopes WHERE scope = ANY($1::text[]) AND last_complete_at IS NOT NULL"
)

ROUNDS = Counter("mirror_ingest_head_rounds", "Head-watch rounds over the scopes")
FOUND = Counter("mirror_ingest_head_images", "New images the head-watch recorded", ["scope"])


@runtime_checkable
class HeadSource(Protocol):
    """What the head-watch needs from the upstream (``UpstreamClient`` is one)."""

    async def list_page(
        self,
        scope: Scope,
        *,
        page_size: int = ...,
        page_token: str = ...,
        filter: str | None = ...,
        order_by: str | None = ...,
    ) -> Page: ...


def unknown_images(images: Sequence[dict[str, Any]], known: set[str]) -> list[dict[str, Any]]:
    """The images of a page the index does not have.

    Not only those before the first known one: a walk passing by indexes some of the
    newest images (churn pushes them while it walks), and one of them must not hide
    an older push below it.
    """
    return [image for image in images if image.get("id") not in known]


class HeadWatch:
    """Rounds over the scopes' newest images; ``run`` until ``stop``."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        client: HeadSource,
        scopes: Sequence[Scope],
        *,
        interval: float,
        page_size: int = HEAD_PAGE_SIZE,
    ) -> None:
        self._pool = pool
        self._client = client
        self._scopes = tuple(dict.fromkeys(scopes))
        self._interval = interval
        self._page_size = page_size

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds every ``interval`` seconds, counted from each round's start (a slow round
        does not push the next one back), until ``stop``."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            try:
                await self.round()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("head-watch round failed: %s", exc)
            delay = max(0.0, self._interval - (loop.time() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def round(self) -> int:
        """One look at every walked scope's head; how many images were recorded."""
        ROUNDS.inc()
        async with self._pool.acquire() as conn:
            walked = {
                r["scope"] for r in await conn.fetch(SELECT_WALKED, [str(s) for s in self._scopes])
            }
        scopes = [s for s in self._scopes if str(s) in walked]
        counts = await asyncio.gather(*(self._watch(scope) for scope in scopes))
        return sum(counts)

    async def _watch(self, scope: Scope) -> int:
        created = 0
        token = ""
        for _ in range(MAX_PAGES):
            try:
                page = await self._client.list_page(
                    scope, page_size=self._page_size, page_token=token, order_by=ORDER_NEWEST_FIRST
                )
            except UpstreamError as exc:
                log.info("head-watch: %s: the upstream did not answer: %s", scope, exc)
                break
            new, any_known = await self._merge(scope, page)
            created += new
            # A page with an image the index has reached what the walks cover: stop there.
            if any_known or not page.next_page_token:
                break
            token = page.next_page_token
        if created:
            FOUND.labels(str(scope)).inc(created)
            log.info("head-watch: %s: %d new image(s) recorded", scope, created)
        return created

    async def _merge(self, scope: Scope, page: Page) -> tuple[int, bool]:
        """Merge the page's images the index lacks: (created, whether any was known)."""
        if not page.images:
            return 0, False
        async with self._pool.acquire() as conn:
            ids = [str(i.get("id", "")) for i in page.images]
            known = {r["id"] for r in await conn.fetch(SELECT_KNOWN, ids)}
            fresh = unknown_images(page.images, known)
            if not fresh:
                return 0, True
            try:
                items = page_images(fresh)
            except MalformedImage as exc:
                log.warning("head-watch: %s: %s", scope, exc)
                return 0, True
            writer = PageWriter(
                conn,
                folder_id=scope.id if scope.kind is ScopeKind.FOLDER else None,
                origin=ORIGIN,
            )
            await writer.prepare()
            try:
                result = await writer.apply(items)
            finally:
                await writer.close()
        return result.created, bool(known)


async def run_head_watch(
    pool: asyncpg.Pool,
    client: Any,
    scopes: Sequence[Scope],
    interval: float,
    stop: asyncio.Event,
) -> None:
    """The head-watch until ``stop``; returns at once when it is off (``interval`` 0) or the
    client cannot list by creation time."""
    if interval <= 0 or not isinstance(client, HeadSource) or not scopes:
        return
    await HeadWatch(pool, client, scopes, interval=interval).run(stop)
