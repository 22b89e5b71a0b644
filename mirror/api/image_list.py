"""List and Get from the index, answered with the upstream's exact JSON.

Each image's JSON is the stored ``images.doc`` text (or its template filled in,
sql/104), byte for byte as the upstream sent it: a page is built by joining those
texts, never by parsing and re-serialising them. The page token is this service's own (keyset, signed; see
``page_tokens`` and ``page_keys``): reading a page writes nothing; everything else about a page is the upstream's: its order,
its size, and a ``nextPageToken`` exactly when more images follow. A page read
again before the index changes comes from memory (``page_cache``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from mirror.api.list_query import (
    IMAGE_PARTS,
    RegistryNumbers,
    generic_plan,
    list_params,
    list_sql,
    registries_named,
    shape_of,
    sort_values,
)
from mirror.api.page_cache import Page, PageCache, VersionReads, page_key
from mirror.api.page_keys import PageKeys
from mirror.api.page_tokens import Value, query_fingerprint
from mirror.errors import InvalidArgument
from mirror.image_wire import filled_doc
from mirror.listing import ListRequest, SortField
from mirror.model import digest_text

# convert_to: the stored text as UTF-8 bytes, handed to the client without a decode
# and re-encode in Python.
SELECT_IMAGE_DOC = f"SELECT id, name, digest, {IMAGE_PARTS} FROM images WHERE id = $1"
SELECT_IMAGE_HELD = "SELECT EXISTS (SELECT FROM images WHERE id = $1)"
SET_GENERIC_PLAN = "SET plan_cache_mode = force_generic_plan"
RESET_PLAN_MODE = "RESET plan_cache_mode"
# What a page's answer starts with when it has images (``page_body``).
IMAGES_OPEN = b'{"images":['


class ImageReader:
    """List pages and single images from the index."""

    def __init__(
        self, pool: asyncpg.Pool, page_keys: PageKeys, cache: PageCache | None = None
    ) -> None:
        self._pool = pool
        self._page_keys = page_keys
        self._cache = cache  # None: every page is read from the index
        self._versions = VersionReads(pool)
        self._registries = RegistryNumbers()

    async def get(self, image_id: str) -> bytes | None:
        """The image's upstream JSON, or None when the index does not hold it."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(SELECT_IMAGE_DOC, image_id)
        return None if row is None else row_json(row)

    async def holds(self, image_id: str) -> bool:
        """Whether the index holds the image."""
        async with self._pool.acquire() as conn:
            held: bool = await conn.fetchval(SELECT_IMAGE_HELD, image_id)
        return held

    async def list_page(self, request: ListRequest) -> bytes:
        """The JSON body of one List page (``{"images": [...], "nextPageToken": "..."}``)."""
        return (await self._page(request)).body

    async def list_docs(self, request: ListRequest) -> tuple[Sequence[bytes], str]:
        """One List page: its images' JSON docs and the next page token ("" on the last)."""
        page = await self._page(request)
        return page.docs, page.token

    async def _page(self, request: ListRequest) -> Page:
        """The page, from the page cache when the index has not changed since it was read."""
        # a read sent after this request arrived, before the page (mirror.api.page_cache)
        version = None if self._cache is None else await self._versions.read()
        if self._cache is None or version is None:
            async with self._pool.acquire() as conn:
                return await self._read_page(conn, request)
        key = page_key(request)
        page = self._cache.get(key, version)
        if page is None:
            async with self._pool.acquire() as conn:
                page = await self._read_page(conn, request)
            self._cache.put(key, version, page)
        return page

    async def _read_page(self, conn: asyncpg.Connection, request: ListRequest) -> Page:
        fingerprint = query_fingerprint(request.query_key)
        cursor: Sequence[Value] | None = None
        if request.page_token:
            cursor = await self._page_keys.decode(
                conn, request.page_token, fingerprint, request.order
            )
            _check_cursor(request, cursor)
        shape = shape_of(request, after_cursor=cursor is not None)
        numbers = await self._registries.of(conn, registries_named(request))
        params = list_params(request, cursor, request.page_size + 1, numbers)
        if generic_plan(shape):
            rows = await fetch_generic(conn, list_sql(shape), params)
        else:
            rows = await conn.fetch(list_sql(shape), *params)
        token = ""
        if len(rows) > request.page_size:
            rows = rows[: request.page_size]
            last = sort_values(request.order, rows[-1])
            token = self._page_keys.encode(fingerprint, last, [row["id"] for row in rows])
        return make_page([row_json(row) for row in rows], token)


def row_json(row: asyncpg.Record) -> bytes:
    """An image's JSON from a row of ``IMAGE_PARTS`` and its ``id``, ``name`` and ``digest``."""
    doc: bytes | None = row["doc"]
    if doc is not None:
        return doc
    return filled_doc(
        row["doc_template"],
        digest_text(row["digest"]),
        row["blob_keys"],
        row["blob_sizes"],
        row["blob_ids"],
        row["id"],
        row["name"],
    )


def page_body(docs: Sequence[bytes], next_page_token: str) -> bytes:
    """``{"images": [...], "nextPageToken": ...}`` with empty fields omitted, as the upstream writes it."""
    parts: list[bytes] = []
    if docs:
        parts.append(b'"images":[' + b",".join(docs) + b"]")
    if next_page_token:
        parts.append(b'"nextPageToken":' + orjson.dumps(next_page_token))
    return b"{" + b",".join(parts) + b"}"


def make_page(docs: Sequence[bytes], next_page_token: str) -> Page:
    """The page's answer (``page_body``) and where each doc lies in it."""
    spans: list[tuple[int, int]] = []
    start = len(IMAGES_OPEN)
    for doc in docs:
        spans.append((start, start + len(doc)))
        start += len(doc) + 1  # the comma
    return Page(page_body(docs, next_page_token), next_page_token, tuple(spans))


async def fetch_generic(
    conn: asyncpg.Connection, sql: str, params: Sequence[Any]
) -> list[asyncpg.Record]:
    """``fetch`` with the statement's generic plan; the session's mode is left as it was.

    The pool is shared with statements that need ``auto`` (the blob query's plans
    depend on its digest): a connection whose mode cannot be reset is closed rather
    than returned to the pool in that mode.
    """
    await conn.execute(SET_GENERIC_PLAN)
    try:
        return await conn.fetch(sql, *params)
    finally:
        try:
            await conn.execute(RESET_PLAN_MODE)
        except BaseException:
            conn.terminate()
            raise


def _check_cursor(request: ListRequest, cursor: Sequence[Any]) -> None:
    """A verified token still has to fit the order (it always does unless the format changed)."""
    expected: list[type[Any]] = [
        int if key.field is SortField.CREATED_AT else str for key in request.order
    ]
    expected.append(str)
    if len(cursor) != len(expected) or not all(
        isinstance(value, kind) for value, kind in zip(cursor, expected, strict=True)
    ):
        raise InvalidArgument("invalid pageToken: malformed")
