"""Merging List pages into the index: COPY into staging tables, set-based SQL that
returns what changed, and the change events in the same transaction.

A walk owns one connection and a ``PageWriter`` on it. Per page:

1. one statement compares the page's ``(id, content_hash)`` with the index and
   records the ids as seen in this walk (``ingest_walk_seen``, a temporary
   table: no WAL, gone with the session). An unchanged page ends here, having
   written nothing to the index: re-walking an unchanged registry is read-only.
2. the changed images go by ``COPY`` into ``ingest_stage_images``, their blob
   references as arrays on the row (sql/090), and are upserted in one statement
   whose ``RETURNING old.*`` (PostgreSQL 18) says which rows were created, which
   really changed and which changed their blob references (with the old ones).
   The upsert's ``WHERE`` is a compare-and-set on ``content_hash``: a concurrent
   writer that got there first leaves nothing for the second to do, so no event
   is written twice.
3. one statement applies the per-digest reference deltas of the new images'
   references (+1) and the replaced ones (-1) to ``blobs`` and returns the
   digests that gained their first or lost their last reference.
4. the events go to the outbox (``append_events``), and the transaction commits.

Row locks are always taken in key order (ids, then digests) so that concurrent
writers queue rather than deadlock; a deadlock that still happens is retried.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg

from mirror.ingest.changes import (
    SOURCE,
    BlobTransition,
    MergeResult,
    blob_events,
    image_created,
    image_deleted,
    image_updated,
    with_origin,
)
from mirror.ingest.staging import (
    IMAGE_COLUMNS,
    PageImage,
    image_record,
    registry_of,
)
from mirror.ingest.tags import TagRef, tag_changes, tag_diff, tags_of_deleted
from mirror.model import Event, digest_text
from mirror.store.outbox import append_events

log = logging.getLogger(__name__)

DEADLOCK_RETRIES = 5

# The walk's session commits without waiting for the WAL flush: a crash can lose
# the last few page merges, but each with its events (same transaction), and the
# next walk redoes them. Reset when the connection goes back to the pool. Staged
# rows are not compressed (toast_tuple_target: see sql/090).
CREATE_WALK_TABLES = """
SET synchronous_commit TO off;
CREATE TEMP TABLE IF NOT EXISTS ingest_stage_images (
    id text, name text, registry_id text, folder_id text, digest bytea, compressed_size bigint,
    created_ns bigint, doc_template text, content_hash bytea,
    blob_digests bytea[], blob_sizes bigint[], blob_config boolean, blob_ids text
) WITH (toast_tuple_target = 8160) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS ingest_walk_seen (id text NOT NULL);
TRUNCATE ingest_walk_seen;
"""
DROP_WALK_SEEN = "DROP TABLE IF EXISTS ingest_walk_seen"

# $1 ids, $2 content hashes of the page; $3 the folder of a folder walk (else NULL).
# Records the ids as seen; returns those the index lacks or holds differently.
COMPARE_PAGE = """
WITH page AS (
    SELECT * FROM unnest($1::text[], $2::bytea[]) AS p (id, content_hash)
), seen AS (
    INSERT INTO ingest_walk_seen (id) SELECT id FROM page
)
SELECT p.id
FROM page AS p
LEFT JOIN images AS i ON i.id = p.id
WHERE i.id IS NULL
   OR i.content_hash <> p.content_hash
   OR ($3::text IS NOT NULL AND i.folder_id IS DISTINCT FROM $3::text)
"""

# A folder walk stamps folder_id; other walks keep what a folder walk learned,
# and new images inherit their registry's folder when it is known. An image's
# registry is its number (sql/120: image_registry draws it the first time, once a
# registry of the page).
UPSERT_IMAGES = """
INSERT INTO images AS i (
    id, name, registry, folder_id, digest, compressed_size, created_ns,
    doc_template, content_hash, blob_digests, blob_sizes, blob_config, blob_ids
)
SELECT s.id, s.name, n.number, COALESCE(s.folder_id, r.folder_id), s.digest,
       s.compressed_size, s.created_ns, s.doc_template,
       s.content_hash, s.blob_digests, s.blob_sizes, s.blob_config, s.blob_ids
FROM ingest_stage_images AS s
JOIN (SELECT p.registry_id, image_registry(p.registry_id) AS number
      FROM (SELECT DISTINCT registry_id FROM ingest_stage_images ORDER BY 1) AS p) AS n
  ON n.registry_id = s.registry_id
LEFT JOIN registries AS r ON r.registry_id = s.registry_id
ORDER BY s.id
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name,
    registry = EXCLUDED.registry,
    folder_id = COALESCE(EXCLUDED.folder_id, i.folder_id),
    digest = EXCLUDED.digest,
    compressed_size = EXCLUDED.compressed_size,
    created_ns = EXCLUDED.created_ns,
    doc = NULL,
    doc_template = EXCLUDED.doc_template,
    content_hash = EXCLUDED.content_hash,
    blob_digests = EXCLUDED.blob_digests,
    blob_sizes = EXCLUDED.blob_sizes,
    blob_config = EXCLUDED.blob_config,
    blob_ids = EXCLUDED.blob_ids
WHERE i.content_hash <> EXCLUDED.content_hash
   OR (EXCLUDED.folder_id IS NOT NULL AND i.folder_id IS DISTINCT FROM EXCLUDED.folder_id)
RETURNING new.id,
          old.id IS NULL AS created,
          old.id IS NOT NULL AND old.content_hash <> new.content_hash AS changed,
          CASE WHEN old.content_hash <> new.content_hash THEN image_doc(old)::json END AS old_doc,
          -- the replaced references, only where they changed (the arrays are NOT NULL)
          CASE WHEN (old.blob_digests, old.blob_sizes) IS DISTINCT FROM (new.blob_digests, new.blob_sizes)
               THEN old.blob_digests END AS old_digests,
          CASE WHEN (old.blob_digests, old.blob_sizes) IS DISTINCT FROM (new.blob_digests, new.blob_sizes)
               THEN old.blob_sizes END AS old_sizes
"""

# Per-digest reference deltas applied in digest order; returns the digests whose
# reference count crossed zero, with the image that caused it.
_APPLY_DELTA = """
, delta AS (
    SELECT digest, max(size) AS size, sum(d)::bigint AS d,
           min(image_id) FILTER (WHERE d > 0) AS gained_by,
           min(image_id) FILTER (WHERE d < 0) AS lost_by
    FROM refs
    GROUP BY digest
    HAVING sum(d) <> 0
), applied AS (
    INSERT INTO blobs AS b (digest, size, ref_count)
    SELECT digest, size, d FROM delta ORDER BY digest
    ON CONFLICT (digest) DO UPDATE SET
        ref_count = b.ref_count + EXCLUDED.ref_count,
        orphaned_at = CASE WHEN b.ref_count + EXCLUDED.ref_count = 0 THEN now() END
    RETURNING new.digest, new.size, COALESCE(old.ref_count, 0) AS before, new.ref_count AS after
)
SELECT a.digest, a.size, a.after > 0 AS added,
       CASE WHEN a.after > 0 THEN d.gained_by ELSE d.lost_by END AS image_id
FROM applied AS a
JOIN delta AS d USING (digest)
WHERE (a.before = 0) <> (a.after = 0)
ORDER BY a.digest
"""

# The references of the staged images $1 (+1 each) and the replaced ones $2..$4 (-1 each).
MERGE_BLOBS = (
    """
WITH refs AS (
    SELECT u.digest, u.size, s.id AS image_id, 1 AS d
    FROM ingest_stage_images AS s
    JOIN unnest($1::text[]) AS g (id) ON g.id = s.id
    CROSS JOIN LATERAL unnest(s.blob_digests, s.blob_sizes) AS u (digest, size)
    UNION ALL
    SELECT digest, size, image_id, -1
    FROM unnest($2::bytea[], $3::bigint[], $4::text[]) AS r (digest, size, image_id)
)"""
    + _APPLY_DELTA
)

# Removed rows only ($1..$3): usable on any connection (no staging table needed).
REMOVE_BLOB_REFS = (
    """
WITH refs AS (
    SELECT digest, size, image_id, -1 AS d
    FROM unnest($1::bytea[], $2::bigint[], $3::text[]) AS r (digest, size, image_id)
)"""
    + _APPLY_DELTA
)

LOCK_IMAGES_FOR_DELETE = """
SELECT id, image_doc(images)::json AS doc FROM images WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE
"""
DELETE_IMAGES = """
DELETE FROM images WHERE id = ANY($1::text[])
RETURNING id, blob_digests, blob_sizes
"""

KNOWN_REGISTRIES = """
SELECT registry_id FROM registries WHERE registry_id = ANY($1::text[]) AND folder_id = $2
"""
UPSERT_REGISTRIES = """
INSERT INTO registries (registry_id, folder_id)
SELECT unnest($1::text[]), $2
ON CONFLICT (registry_id) DO UPDATE SET folder_id = EXCLUDED.folder_id
"""


def _transitions(rows: Sequence[asyncpg.Record]) -> list[BlobTransition]:
    return [
        BlobTransition(digest_text(r["digest"]), r["size"], r["image_id"] or "", r["added"])
        for r in rows
    ]


RemovedRefs = tuple[list[bytes], list[int], list[str]]


def _removed_refs(rows: Iterable[tuple[str, Sequence[bytes], Sequence[int]]]) -> RemovedRefs:
    """The blob references of removed or replaced images, flattened: (digests, sizes, image ids)."""
    digests: list[bytes] = []
    sizes: list[int] = []
    ids: list[str] = []
    for image_id, image_digests, image_sizes in rows:
        digests.extend(image_digests)
        sizes.extend(image_sizes)
        ids.extend([image_id] * len(image_digests))
    return digests, sizes, ids


async def delete_images(
    conn: asyncpg.Connection,
    image_ids: Sequence[str],
    reason: str,
    *,
    source: str = SOURCE,
    origin: Mapping[str, Any] | None = None,
) -> MergeResult:
    """Remove images from the index with their events, inside the caller's transaction.

    Emits ``registry.image.deleted`` (the last known image and ``reason``) for each
    image that was still indexed, ``registry.blob.orphaned`` for each digest left
    without a reference and ``registry.tag.removed`` for each tag that named one of
    them. Images already gone are skipped silently, so two deleters racing write
    each event once. ``origin`` goes into every event's data (who and why).
    """
    if not conn.is_in_transaction():
        raise RuntimeError("delete_images must run inside a transaction")
    result = MergeResult()
    locked = await conn.fetch(LOCK_IMAGES_FOR_DELETE, list(image_ids))
    if not locked:
        return result
    ids = [r["id"] for r in locked]
    removed = await conn.fetch(DELETE_IMAGES, ids)
    refs = _removed_refs((r["id"], r["blob_digests"], r["blob_sizes"]) for r in removed)
    transitions = _transitions(await conn.fetch(REMOVE_BLOB_REFS, *refs))
    events: list[Event] = [image_deleted(r["doc"], reason, source) for r in locked]
    events += blob_events(transitions, source)
    digests = {str(r["id"]): str(r["doc"].get("digest", "")) for r in locked}
    events += await tags_of_deleted(conn, digests, source)
    events = with_origin(events, origin)
    await append_events(conn, events)
    result.deleted = len(locked)
    result.blobs_orphaned = sum(1 for t in transitions if not t.added)
    result.events = events
    return result


class PageWriter:
    """Merges the pages of one walk on the walk's own connection."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        *,
        folder_id: str | None = None,
        origin: Mapping[str, Any] | None = None,
    ) -> None:
        self.conn = conn
        self.folder_id = folder_id
        self.origin = origin  # added to every event's data (the walk's runId)
        self._known_registries: set[str] = set()

    async def prepare(self) -> None:
        """Create (or empty) the walk's temporary tables on this connection."""
        await self.conn.execute(CREATE_WALK_TABLES)

    async def close(self) -> None:
        """Drop the walk's seen-ids table (the staging tables stay, empty, for the next walk)."""
        await self.conn.execute(DROP_WALK_SEEN)

    async def apply(self, items: Sequence[PageImage]) -> MergeResult:
        """Record the page as seen and merge what differs from the index (one transaction)."""
        changed = await self.compare(items)
        return await self.merge(changed) if changed else MergeResult()

    async def compare(self, items: Sequence[PageImage]) -> list[PageImage]:
        """Record the page's images as seen in this walk; those the index lacks or holds
        differently (what ``merge`` must write)."""
        if not items:
            return []
        changed_rows = await self.conn.fetch(
            COMPARE_PAGE, [i.id for i in items], [i.content_hash for i in items], self.folder_id
        )
        if self.folder_id is not None:
            await self.remember_registries(registry_of(i.image) for i in items)
        changed_ids = {r["id"] for r in changed_rows}
        return [i for i in items if i.id in changed_ids]

    async def merge(self, changed: Sequence[PageImage]) -> MergeResult:
        """Merge images ``compare`` found changed, in one transaction on this writer's
        connection (which may be another than the one that compared them: the walk's
        pipeline, mirror/ingest/walker.py)."""
        for attempt in range(1, DEADLOCK_RETRIES + 1):
            try:
                async with self.conn.transaction():
                    return await self._merge(changed)
            except asyncpg.DeadlockDetectedError:
                if attempt == DEADLOCK_RETRIES:
                    raise
                log.info("page merge deadlocked with another writer; retrying (%d)", attempt)
        raise AssertionError("unreachable")

    async def remember_registries(self, registry_ids: Iterable[str]) -> None:
        """On a folder walk: record that these registries belong to the folder."""
        if self.folder_id is None:
            return
        registries = set(registry_ids) - self._known_registries
        registries.discard("")
        if not registries:
            return
        wanted = sorted(registries)
        known = {
            r["registry_id"]
            for r in await self.conn.fetch(KNOWN_REGISTRIES, wanted, self.folder_id)
        }
        missing = [r for r in wanted if r not in known]
        if missing:
            await self.conn.execute(UPSERT_REGISTRIES, missing, self.folder_id)
        self._known_registries |= registries

    async def _merge(self, changed: Sequence[PageImage]) -> MergeResult:
        conn = self.conn
        result = MergeResult()
        await conn.copy_records_to_table(
            "ingest_stage_images",
            records=[image_record(i, self.folder_id) for i in changed],
            columns=IMAGE_COLUMNS,
        )
        by_id = {i.id: i for i in changed}
        events: list[Event] = []
        gained: list[str] = []  # images whose blob references are new or rewritten
        replaced: list[tuple[str, Sequence[bytes], Sequence[int]]] = []  # their old references
        claims: list[TagRef] = []
        releases: list[TagRef] = []
        inserted: dict[str, bytes] = {}  # the docs of the images this transaction inserted
        for row in await conn.fetch(UPSERT_IMAGES):
            item = by_id[row["id"]]
            if row["created"]:
                events.append(image_created(item.image))
                inserted[item.id] = item.doc
                claims += tag_diff(None, item.image)[0]
                gained.append(item.id)
                result.created += 1
            elif row["changed"]:
                old: dict[str, Any] = row["old_doc"]
                events.append(image_updated(old, item.image))
                gained_tags, lost_tags = tag_diff(old, item.image)
                claims += gained_tags
                releases += lost_tags
                result.updated += 1
                if row["old_digests"] is not None:  # its blob references changed
                    gained.append(item.id)
                    replaced.append((item.id, row["old_digests"], row["old_sizes"]))
            # else: only folder_id was filled in; not an upstream change, no event
        if gained:
            removed = _removed_refs(replaced)
            transitions = _transitions(await conn.fetch(MERGE_BLOBS, gained, *removed))
            events += blob_events(transitions)
            result.blobs_added = sum(1 for t in transitions if t.added)
            result.blobs_orphaned = len(transitions) - result.blobs_added
        events += await tag_changes(conn, claims, releases, SOURCE)
        events = with_origin(events, self.origin)
        await append_events(conn, events, inserted=inserted)
        result.events = events
        return result
