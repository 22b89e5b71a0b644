"""The page memo: re-walking an unchanged registry without parsing its pages.

The upstream answers an unchanged List page with the same bytes. For each page
of a walk the memo keeps (``ingest_page_memo``, keyed by the scope, the page
size and the request's page token) a 128-bit hash of the body (XXH3, see
``body_hash``), the next page token it gave, and the ids and content hashes of
its images (the SHA-256 of their concatenation, sql/118). A later walk that
receives a body with the same hash for the same request skips the JSON parse, the
per-image serialisation and hashing: one statement checks that the index still
holds every one of those images with that content hash (and, on a folder walk, in
that folder) and records them as seen for deletion detection.

A memo can only save work, never change an outcome: a body that differs, or an
index that changed since (another scope's walk, a Delete through the local
API), sends the page down the ordinary path, which rewrites the memo row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import asyncpg
from xxhash import xxh3_128_digest

from mirror.ingest.staging import PageImage, registry_of

LOAD = "SELECT page_token, body_hash, next_token FROM ingest_page_memo WHERE walk_key = $1"

RECORD = """
INSERT INTO ingest_page_memo AS m
    (walk_key, page_token, body_hash, next_token, ids, hashes_digest, registries)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (walk_key, page_token) DO UPDATE SET
    body_hash = EXCLUDED.body_hash,
    next_token = EXCLUDED.next_token,
    ids = EXCLUDED.ids,
    hashes_digest = EXCLUDED.hashes_digest,
    registries = EXCLUDED.registries
"""

# $1 walk key, $2 page token, $3 body hash; $4 the folder of a folder walk (else NULL).
# When the memo row matches and the index holds every image as remembered, records
# the ids as seen (ingest_walk_seen, as COMPARE_PAGE does) and answers ok.
#
# The memo keeps a page's ids sorted and distinct and the SHA-256 of their content
# hashes concatenated in that order (``hashes_digest``), so the check is one index scan
# for all the ids at once (``= ANY``, which walks the index's leaves forward instead of
# descending from the root for each id) whose hashes, in id order, must give the
# remembered digest: a missing image, a changed one or one in another folder (left out
# by the folder condition) changes the concatenation (each hash is 16 bytes).
CHECK_AND_SEE = """
WITH memo AS (
    SELECT m.ids, m.hashes_digest, m.registries FROM ingest_page_memo AS m
    WHERE m.walk_key = $1 AND m.page_token = $2 AND m.body_hash = $3
), ok AS (
    SELECT coalesce((
        SELECT sha256(coalesce(string_agg(i.content_hash, ''::bytea ORDER BY i.id), ''::bytea))
        FROM memo, images AS i
        WHERE i.id = ANY (memo.ids) AND ($4::text IS NULL OR i.folder_id = $4::text)
    ) = (SELECT memo.hashes_digest FROM memo), false) AS ok
), seen AS (
    INSERT INTO ingest_walk_seen (id) SELECT unnest(memo.ids) FROM memo WHERE (SELECT ok FROM ok)
    RETURNING 1
)
SELECT (SELECT ok FROM ok) AS ok, (SELECT count(*) FROM seen) AS images,
       (SELECT registries FROM memo) AS registries,
       (SELECT ids[1] FROM memo) AS first_id,
       (SELECT ids[cardinality(ids)] FROM memo) AS last_id
"""

PRUNE = "DELETE FROM ingest_page_memo WHERE walk_key = $1 AND page_token <> ALL($2::text[])"


def body_hash(body: bytes) -> bytes:
    """The body's 128-bit XXH3: ~0.04 ms for a 1.3 MB page against ~1 ms for SHA-256,
    whose time was the largest of a re-sync's own. It tells a page's bytes from those of
    the page remembered under the same request, not from an adversary's: an upstream (or
    a proxy) that chose to could as well answer the remembered bytes themselves. Memo
    rows of an older hash (SHA-256, 32 bytes) never match; such a page is merged and
    remembered anew."""
    return xxh3_128_digest(body)


def hashes_digest(hashes: Iterable[bytes]) -> bytes:
    """The SHA-256 of a page's content hashes (16 bytes each) concatenated in id order,
    as ``CHECK_AND_SEE`` computes it from the index."""
    return hashlib.sha256(b"".join(hashes)).digest()


@dataclass(frozen=True, slots=True)
class MemoHit:
    """What a page's memo row said, once checked against the index."""

    images: int
    registries: list[str]
    first_id: str = ""  # the smallest and largest image id of the page ("" when empty)
    last_id: str = ""


class PageMemo:
    """The memo rows of one walk key, loaded at the start of a walk.

    Holds three small fields per page (not the ids), so a walk's memory stays
    flat in the registry's size.
    """

    def __init__(self, walk_key: str) -> None:
        self.walk_key = walk_key
        self._pages: dict[str, tuple[bytes, str]] = {}
        self._used: list[str] = []

    async def load(self, conn: asyncpg.Connection) -> None:
        self._pages = {
            r["page_token"]: (bytes(r["body_hash"]), r["next_token"])
            for r in await conn.fetch(LOAD, self.walk_key)
        }

    def remembered_next(self, page_token: str) -> str | None:
        """The next page token remembered after ``page_token``, None when there is none:
        a guess the client reads ahead on (``UpstreamClient.iter_pages``), never trusted
        for anything else."""
        remembered = self._pages.get(page_token)
        if remembered is None or not remembered[1]:
            return None
        return remembered[1]

    def next_token(self, page_token: str, body: bytes) -> str | None:
        """The next page token when this answer is the one remembered, else None.

        Matches on the body alone: whether the index still agrees is for
        ``check`` to say, on the walk's connection, in page order.
        """
        self._used.append(page_token)
        remembered = self._pages.get(page_token)
        if remembered is None:
            return None
        return remembered[1] if remembered[0] == body_hash(body) else None

    async def check(
        self, conn: asyncpg.Connection, page_token: str, body: bytes, folder_id: str | None
    ) -> MemoHit | None:
        """Record the remembered images as seen if the index still holds them; else None."""
        row = await conn.fetchrow(
            CHECK_AND_SEE, self.walk_key, page_token, body_hash(body), folder_id
        )
        if row is None or not row["ok"]:
            return None  # the page is merged, and ``record`` remembers it anew
        return MemoHit(
            row["images"],
            list(row["registries"] or ()),
            row["first_id"] or "",
            row["last_id"] or "",
        )

    async def record(
        self,
        conn: asyncpg.Connection,
        page_token: str,
        body: bytes,
        next_token: str,
        items: Sequence[PageImage],
    ) -> None:
        """Remember a page the walk merged (its images are now in the index as listed).

        ``items`` come from ``page_images``: distinct ids in Python's order, which is
        the "C" collation of ``images.id`` that ``CHECK_AND_SEE`` compares in."""
        registries = sorted({registry_of(i.image) for i in items} - {""})
        await conn.execute(
            RECORD,
            self.walk_key,
            page_token,
            body_hash(body),
            next_token,
            [i.id for i in items],
            hashes_digest(i.content_hash for i in items),
            registries,
        )

    async def prune(self, conn: asyncpg.Connection) -> None:
        """After a complete walk: forget the pages this walk did not ask for."""
        await conn.execute(PRUNE, self.walk_key, self._used)
