"""Tag events: which image each tag of a repository names, and its transitions.

The ``tags`` table (``sql/070_tags.sql``) holds, per ``(repository, tag)``, the
image the index last saw carrying it. Every writer of image changes (page
merges, deletions, the head-watch) calls in here in the transaction of the
change, and gets back the ``registry.tag.*`` events to append with it:

* a **claim** (an image now carries a tag it did not): ``registry.tag.added``,
  with ``previousImageId`` when the row named another image (a move), and none
  at all when the row already named this image;
* a **release** (an image stopped carrying a tag it held): no event yet. The row
  is marked released; a later claim turns the pair into one move. A walk meets
  the two images of a move in either order, on different pages: this is what
  makes a re-tag storm one event per tag change, never one per page.
* when a complete walk of the scope ends, released rows nobody claimed become
  ``registry.tag.removed`` (reason ``untagged``): ``resolve_released``;
* a deleted image's rows become ``registry.tag.removed`` (reason
  ``image-deleted``, or ``untagged`` when it had already let the tag go):
  ``tags_of_deleted``.

All of it runs under the outbox's transaction lock (``OUTBOX_LOCK_KEY``), taken
after the writer's row locks on images and blobs: tag rows are only ever touched
by the lock's holder, so concurrent writers neither race on a tag nor deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from mirror.ingest.changes import with_origin
from mirror.model import (
    Event,
    EventType,
    Scope,
    ScopeKind,
    digest_key,
    folder_registry_numbers,
    registry_number,
)
from mirror.store.outbox import LOCK_OUTBOX, OUTBOX_LOCK_KEY, append_events

REASON_UNTAGGED = "untagged"
REASON_IMAGE_DELETED = "image-deleted"
REASONS = (REASON_UNTAGGED, REASON_IMAGE_DELETED)

# A row names its repository by a number (sql/116: tag_repositories, written by these
# statements alone, under the outbox's lock) and takes its digest from the tagged
# image's row; ``tags.digest`` holds one (its key: mirror.model.digest_key) only where
# that row does not give it (no such image, or another digest). Both are keys (sql/120).
_DIGEST_OF_T = (
    "mirror_digest_text(coalesce(t.digest,"
    " (SELECT i.digest FROM images i WHERE i.id = t.image_id)))"
)
_NAME_OF_T = "(SELECT p.name FROM tag_repositories p WHERE p.id = t.repository_id)"
SELECT_TAGS = f"""
SELECT k.repository, t.tag, t.image_id, {_DIGEST_OF_T} AS digest,
       t.released_at IS NOT NULL AS released
FROM unnest($1::text[], $2::text[]) AS k (repository, tag)
JOIN tag_repositories AS p ON p.name = k.repository
JOIN tags AS t ON t.repository_id = p.id AND t.tag = k.tag
"""
# A name met for the first time draws the next number; the statement sees the table as
# it was before, so the names it numbers come from the CTE's RETURNING.
UPSERT_TAGS = """
WITH numbered AS (
    INSERT INTO tag_repositories (name)
    SELECT DISTINCT r.name FROM unnest($1::text[]) AS r (name)
    WHERE NOT EXISTS (SELECT FROM tag_repositories p WHERE p.name = r.name)
    ORDER BY 1
    RETURNING id, name
),
numbers AS (
    SELECT id, name FROM numbered
    UNION ALL
    SELECT id, name FROM tag_repositories WHERE name = ANY($1::text[])
)
INSERT INTO tags AS t (repository_id, tag, image_id, digest, released_at)
SELECT n.id, r.tag, r.image_id,
       CASE WHEN r.digest IS DISTINCT FROM (SELECT i.digest FROM images i WHERE i.id = r.image_id)
            THEN r.digest END,
       CASE WHEN r.released THEN now() END
FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bool[])
     AS r (repository, tag, image_id, digest, released)
JOIN numbers AS n ON n.name = r.repository
ORDER BY n.id, r.tag
ON CONFLICT (repository_id, tag) DO UPDATE SET
    image_id = EXCLUDED.image_id,
    digest = EXCLUDED.digest,
    released_at = EXCLUDED.released_at
"""
# The images are gone by then (the caller deleted them): their digests come along.
DELETE_TAGS_OF_IMAGES = f"""
DELETE FROM tags AS t
USING unnest($1::text[], $2::text[]) AS d (image_id, digest)
WHERE t.image_id = d.image_id
RETURNING {_NAME_OF_T} AS repository, t.tag, t.image_id,
          coalesce(mirror_digest_text(t.digest), d.digest) AS digest,
          t.released_at IS NOT NULL AS released
"""
_RELEASED_OF_SCOPE: dict[ScopeKind, str] = {
    ScopeKind.FOLDER: f"""(i.folder_id = $1
        OR i.registry IN ({folder_registry_numbers("$1")}))""",
    ScopeKind.REGISTRY: f"i.registry = {registry_number('$1')}",
    ScopeKind.REPOSITORY: "i.name = $1",
}
RESOLVE_RELEASED: dict[ScopeKind, str] = {
    kind: f"""
DELETE FROM tags AS t
USING images AS i
WHERE t.released_at IS NOT NULL AND i.id = t.image_id AND {condition}
RETURNING {_NAME_OF_T} AS repository, t.tag, t.image_id,
          mirror_digest_text(coalesce(t.digest, i.digest)) AS digest
"""
    for kind, condition in _RELEASED_OF_SCOPE.items()
}


@dataclass(frozen=True, slots=True)
class TagRef:
    """A tag as an image carries it."""

    repository: str
    tag: str
    image_id: str
    digest: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.repository, self.tag)


@dataclass(slots=True)
class _Row:
    image_id: str
    digest: str
    released: bool


def subject(repository: str, tag: str) -> str:
    """The event subject and Kafka key: ``<repository name>:<tag>``."""
    return f"{repository}:{tag}"


def tag_refs(image: Mapping[str, Any]) -> list[TagRef]:
    """The tags an image (in the upstream's JSON shape) carries."""
    name = str(image.get("name", ""))
    image_id = str(image["id"])
    digest = str(image.get("digest", ""))
    return [TagRef(name, str(t), image_id, digest) for t in image.get("tags", ())]


def tag_diff(
    old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
) -> tuple[list[TagRef], list[TagRef]]:
    """(claims, releases) of one image's change: tags it gained and tags it lost.

    ``old`` None: a new image (every tag a claim); ``new`` None: use
    ``tags_of_deleted`` instead.
    """
    old_refs = tag_refs(old) if old is not None else []
    new_refs = tag_refs(new) if new is not None else []
    old_keys = {r.key for r in old_refs}
    new_keys = {r.key for r in new_refs}
    claims = [r for r in new_refs if r.key not in old_keys]
    releases = [r for r in old_refs if r.key not in new_keys]
    return claims, releases


def added_event(ref: TagRef, previous: str | None, source: str) -> Event:
    data: dict[str, Any] = {
        "repository": ref.repository,
        "tag": ref.tag,
        "imageId": ref.image_id,
        "digest": ref.digest,
    }
    if previous:
        data["previousImageId"] = previous
    return Event(EventType.TAG_ADDED, subject(ref.repository, ref.tag), data, source)


def removed_event(ref: TagRef, reason: str, source: str) -> Event:
    data = {
        "repository": ref.repository,
        "tag": ref.tag,
        "imageId": ref.image_id,
        "digest": ref.digest,
        "reason": reason,
    }
    return Event(EventType.TAG_REMOVED, subject(ref.repository, ref.tag), data, source)


def transitions(
    rows: Mapping[tuple[str, str], _Row],
    claims: Iterable[TagRef],
    releases: Iterable[TagRef],
    source: str,
) -> tuple[list[Event], dict[tuple[str, str], _Row]]:
    """Pure: the events of these claims and releases against the current rows, and
    the rows to write. Releases are applied first; the result does not depend on it."""
    state = dict(rows)
    changed: dict[tuple[str, str], _Row] = {}
    for ref in releases:
        row = state.get(ref.key)
        if row is not None and row.image_id == ref.image_id and not row.released:
            row = _Row(row.image_id, row.digest, True)
            state[ref.key] = changed[ref.key] = row
    events: list[Event] = []
    for ref in claims:
        row = state.get(ref.key)
        if row is None or row.image_id != ref.image_id:
            events.append(added_event(ref, row.image_id if row is not None else None, source))
        elif not row.released and row.digest == ref.digest:
            continue  # already named this image
        state[ref.key] = changed[ref.key] = _Row(ref.image_id, ref.digest, False)
    return events, changed


async def tag_changes(
    conn: asyncpg.Connection,
    claims: Sequence[TagRef],
    releases: Sequence[TagRef],
    source: str,
) -> list[Event]:
    """Apply claims and releases to ``tags`` in the caller's transaction; the events."""
    if not claims and not releases:
        return []
    if not conn.is_in_transaction():
        raise RuntimeError("tag_changes must run inside the transaction of the change")
    await conn.execute(LOCK_OUTBOX, OUTBOX_LOCK_KEY)
    keys = sorted({r.key for r in (*claims, *releases)})
    rows = {
        (r["repository"], r["tag"]): _Row(r["image_id"], r["digest"], r["released"])
        for r in await conn.fetch(SELECT_TAGS, [k[0] for k in keys], [k[1] for k in keys])
    }
    events, changed = transitions(rows, claims, releases, source)
    if changed:
        ordered = sorted(changed.items())
        await conn.execute(
            UPSERT_TAGS,
            [k[0] for k, _ in ordered],
            [k[1] for k, _ in ordered],
            [r.image_id for _, r in ordered],
            [digest_key(r.digest) for _, r in ordered],  # keys, as the image rows hold them
            [r.released for _, r in ordered],
        )
    return events


async def tags_of_deleted(
    conn: asyncpg.Connection, digests: Mapping[str, str], source: str
) -> list[Event]:
    """Drop the tag rows of deleted images (caller's transaction); their removal events.

    ``digests``: each deleted image's digest by its id (their rows are gone)."""
    if not digests:
        return []
    await conn.execute(LOCK_OUTBOX, OUTBOX_LOCK_KEY)
    rows = await conn.fetch(DELETE_TAGS_OF_IMAGES, list(digests), list(digests.values()))
    return [
        removed_event(
            TagRef(r["repository"], r["tag"], r["image_id"], r["digest"]),
            REASON_UNTAGGED if r["released"] else REASON_IMAGE_DELETED,
            source,
        )
        for r in sorted(rows, key=lambda r: (r["repository"], r["tag"]))
    ]


async def resolve_released(conn: asyncpg.Connection, scope: Scope, source: str) -> list[Event]:
    """After a complete walk of ``scope``: tags its images let go and nobody claimed are
    removed (caller's transaction); their events."""
    await conn.execute(LOCK_OUTBOX, OUTBOX_LOCK_KEY)
    rows = await conn.fetch(RESOLVE_RELEASED[scope.kind], scope.id)
    return [
        removed_event(
            TagRef(r["repository"], r["tag"], r["image_id"], r["digest"]), REASON_UNTAGGED, source
        )
        for r in sorted(rows, key=lambda r: (r["repository"], r["tag"]))
    ]


async def settle_released(
    conn: asyncpg.Connection, scope: Scope, source: str, origin: Mapping[str, Any] | None = None
) -> int:
    """``resolve_released`` in its own transaction, with its events; how many tags went."""
    async with conn.transaction():
        events = with_origin(await resolve_released(conn, scope, source), origin)
        await append_events(conn, events)
    return len(events)
