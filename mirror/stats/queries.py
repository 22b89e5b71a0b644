"""Serving the dedup figures from the aggregates the stats folder keeps (mirror/stats/folder.py).

Every function is one or a few indexed lookups: the scope totals are one keyed
row, per-image answers look at that image's blobs only, top layers and
reclaimable blobs walk an index on ``blobs`` from its best end. Each answer
carries its ``Freshness`` (docs/STATS.md, "How the figures stay cheap", says
what ``asOf`` covers in each answer). Digests are 32-byte keys in the database
(sql/090) and text in the answers: converted here.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import asyncpg

from mirror.model import Scope, ScopeKind, digest_key, digest_text
from mirror.stats.figures import (
    DedupStats,
    Freshness,
    ImageUsage,
    LayerReport,
    LayerSavings,
    ReclaimableBlob,
    RelatedImage,
    scope_label,
)

DEFAULT_LAYERS = 10
DEFAULT_RECLAIMABLE = 10
DEFAULT_RELATED = 100
REPOSITORIES_PER_LAYER = 10
CHAIN_PART_BYTES = 4

# Where the folded figures stand (stats_folded), and the log not folded yet.
_FRESHNESS = """
       f.event_id, f.folded_at,
       (SELECT count(*) FROM stats_changes) AS pending,
       coalesce((SELECT extract(epoch FROM now() - min(c.at)) FROM stats_changes c), 0)::float8 AS lag
"""

SELECT_FRESHNESS = f"SELECT {_FRESHNESS} FROM stats_folded f"

# One scope's row and the mark, in one statement (one snapshot).
SELECT_TOTALS = f"""
SELECT coalesce(t.images, 0) AS images, coalesce(t.compressed, 0) AS compressed,
       coalesce(t.logical, 0) AS logical, coalesce(t.blobs, 0) AS blobs,
       coalesce(t.stored, 0) AS stored, coalesce(t.reclaimable_blobs, 0) AS reclaimable_blobs,
       coalesce(t.reclaimable_bytes, 0) AS reclaimable_bytes, {_FRESHNESS}
FROM stats_folded f LEFT JOIN stats_totals t ON t.scope_key = $1
"""

# The folders or registries ($1: 'folder:' / 'registry:') that hold images now.
SELECT_SCOPE_KEYS = """
SELECT scope_key FROM stats_totals
WHERE starts_with(scope_key, $1) AND images > 0
ORDER BY scope_key
"""
# Whether a scope has aggregates at all: the index held an image of it once
# (folded), or a change not folded yet names it ($2 kind, $3 id or repository name).
SCOPE_KNOWN = """
SELECT EXISTS (SELECT 1 FROM stats_totals WHERE scope_key = $1)
    OR EXISTS (SELECT 1 FROM stats_changes
               WHERE CASE $2::text WHEN 'folder' THEN folder_id = $3
                                   WHEN 'registry' THEN registry_id = $3
                                   ELSE name = $3 END)
"""


def digest_repositories(digest: str, limit: str) -> str:
    """The select-list items ``repository_count`` and ``repositories`` (the first ``limit``
    names) of the repositories whose folded count of ``digest`` is above 0 (names from
    ``stats_repositories``, sql/114): the layer report's and the blob endpoint's."""
    return f"""(SELECT count(*) FROM stats_repository_refs r
        WHERE r.digest = {digest} AND r.refs > 0) AS repository_count,
       ARRAY(SELECT p.name FROM stats_repository_refs r
             JOIN stats_repositories p ON p.id = r.repository_id
             WHERE r.digest = {digest} AND r.refs > 0
             ORDER BY p.name LIMIT {limit}) AS repositories"""


SELECT_TOP_LAYERS = f"""
SELECT b.digest, b.size, b.ref_count, {digest_repositories("b.digest", "$2")}
FROM blobs b
WHERE b.ref_count > 1
ORDER BY (b.ref_count - 1) * b.size DESC, b.digest
LIMIT $1
"""

SELECT_RECLAIMABLE = """
SELECT digest, size, orphaned_at FROM blobs
WHERE ref_count = 0
ORDER BY size DESC, digest
LIMIT $1
"""

# The image's distinct digests, each with how many rows of the image carry it and
# how many rows of the scope do ($2: all / registry / folder / repository, $3: its id):
# the whole index's count is blobs.ref_count (kept by the writers: live), a scope's
# the folded per-scope rows (a lone digest counts 1 in its own scopes).
SELECT_IMAGE_DIGESTS = """
SELECT x.digest, x.size, x.rows,
       coalesce(CASE $2::text
           WHEN 'all' THEN (SELECT b.ref_count FROM blobs b WHERE b.digest = x.digest)
           WHEN 'registry' THEN (SELECT r.refs FROM stats_registry_refs r
                                 WHERE r.registry_id = $3 AND r.digest = x.digest)
           WHEN 'folder' THEN (SELECT f.refs FROM stats_folder_refs f
                               WHERE f.folder_id = $3 AND f.digest = x.digest)
           WHEN 'repository' THEN (SELECT p.refs FROM stats_repository_refs p
                                   JOIN stats_repositories n ON n.id = p.repository_id
                                   WHERE p.digest = x.digest AND n.name = $3)
       END, (SELECT 1 FROM stats_lone_digests l
             JOIN stats_repositories n ON n.id = l.repository_id
             WHERE l.digest = x.digest
               AND CASE $2::text
                   WHEN 'registry' THEN split_part(n.name, '/', 1) = $3
                   WHEN 'repository' THEN n.name = $3
                   WHEN 'folder' THEN EXISTS (SELECT 1 FROM stats_registry_folders m
                                              WHERE m.registry_id = split_part(n.name, '/', 1)
                                                AND m.folder_id = $3)
                   ELSE false
               END), 0) AS scope_refs
FROM (SELECT u.digest, count(*) AS rows, max(u.size) AS size
      FROM images i CROSS JOIN LATERAL unnest(i.blob_digests, i.blob_sizes) AS u(digest, size)
      WHERE i.id = $1 GROUP BY u.digest) x
"""

# The image as the index holds it now (its layers, live), its registry (its name's first
# segment) and that registry's folder as folded, and whether the folded counts include
# its own rows yet. The lookups use $1, not i.id: images.id sorts by "C" (sql/020), the
# other tables' keys by the database's collation, and a comparison across the two
# cannot use their indexes.
SELECT_IMAGE = """
SELECT i.name, split_part(i.name, '/', 1) AS registry_id,
       (SELECT m.folder_id FROM stats_registry_folders m
        WHERE m.registry_id = split_part(i.name, '/', 1) COLLATE "default") AS folder_id,
       coalesce((SELECT s.blob_rows > 0 FROM stats_images s WHERE s.image_id = $1), false)
           AS folded,
       i.blob_digests[1 + i.blob_config::int :] AS layers
FROM images i WHERE i.id = $1
"""

# Scope filter on stats_images s of repository p (stats_repositories, sql/114);
# $k kind, $k+1 id.
_IN_SCOPE = """
    ({k}::text = 'all'
     OR ({k} = 'registry' AND split_part(p.name, '/', 1) = {i})
     OR ({k} = 'repository' AND p.name = {i})
     OR ({k} = 'folder' AND EXISTS (SELECT 1 FROM stats_registry_folders m
                                    WHERE m.registry_id = split_part(p.name, '/', 1)
                                      AND m.folder_id = {i})))
"""

_LAYERS_OF_I = "i.blob_digests[1 + i.blob_config::int :]"
# The image's tags, in the order of its JSON (the upstream's; sql/113 dropped the
# column that copied them).
_TAGS_OF_I = "ARRAY(SELECT json_array_elements_text(image_doc(i)::json -> 'tags')) AS tags"

# One page of the bases whose chain is one proper prefix ($1) of the image's, in
# index order after image id $8 (the candidates first, cheaply, by the index; only
# they are checked against the real digests ($4): ``ok``).
SELECT_BASE_CANDIDATES = f"""
SELECT c.image_id, c.name, c.layer_count, mirror_digest_text(i.digest) AS digest,
       {_TAGS_OF_I}, {_LAYERS_OF_I} = ($4::bytea[])[1:c.layer_count] AS ok
FROM (
    SELECT s.image_id, p.name, s.layer_count
    FROM stats_images s JOIN stats_repositories p ON p.id = s.repository_id
    WHERE s.chain = $1 AND s.image_id > $8 AND s.layer_count < $2 AND s.image_id <> $3
      AND {_IN_SCOPE.format(k="$5", i="$6")}
    ORDER BY s.chain, s.image_id
    LIMIT $7
) c
JOIN images i ON i.id = c.image_id
ORDER BY c.layer_count DESC, c.image_id
"""

# One page of derived candidates in key order after ($8, $9): the keys in
# [$1, $2) start with the image's chain; ``ok`` checks the real digests ($5).
SELECT_DERIVED_CANDIDATES = f"""
SELECT c.image_id, c.name, c.layer_count, c.chain, mirror_digest_text(i.digest) AS digest,
       {_TAGS_OF_I},
       ({_LAYERS_OF_I})[1:$3] = $5::bytea[] AS ok
FROM (
    SELECT s.image_id, p.name, s.layer_count, s.chain
    FROM stats_images s JOIN stats_repositories p ON p.id = s.repository_id
    WHERE s.chain >= $1 AND s.chain < $2 AND (s.chain, s.image_id) > ($8::bytea, $9::text)
      AND s.layer_count > $3 AND s.image_id <> $4
      AND {_IN_SCOPE.format(k="$6", i="$7")}
    ORDER BY s.chain, s.image_id
    LIMIT $10
) c
JOIN images i ON i.id = c.image_id
ORDER BY c.chain, c.image_id
"""

# Greater than every chain key (at most 1024 bytes; 2048 before sql/109).
_TOP_KEY = b"\xff" * 2049
CHAIN_LAYERS = 256


def scope_key(scope: Scope | None) -> str:
    """The aggregate key of a scope: ``all`` or ``kind:ID``."""
    return scope_label(scope)


def _scope_params(scope: Scope | None) -> tuple[str, str]:
    if scope is None:
        return "all", ""
    return scope.kind.value, scope.id


async def fetch_stats(conn: asyncpg.Connection | asyncpg.Pool, scope: Scope | None) -> DedupStats:
    """The dedup figures of the whole index (``scope=None``) or one folder/registry/repository."""
    row = await conn.fetchrow(SELECT_TOTALS, scope_key(scope))
    assert row is not None
    return DedupStats(
        scope=scope,
        images=row["images"],
        blobs=row["blobs"],
        logical_bytes=row["logical"],
        compressed_bytes=row["compressed"],
        stored_bytes=row["stored"],
        reclaimable_blobs=row["reclaimable_blobs"],
        reclaimable_bytes=row["reclaimable_bytes"],
        freshness=_freshness(row),
    )


async def fetch_freshness(conn: asyncpg.Connection | asyncpg.Pool) -> Freshness:
    """Up to where the folded aggregates are exact, and how far behind they are."""
    row = await conn.fetchrow(SELECT_FRESHNESS)
    assert row is not None
    return _freshness(row)


def _freshness(row: asyncpg.Record) -> Freshness:
    return Freshness(
        event_id=row["event_id"],
        time=_rfc3339(row["folded_at"]),
        pending_changes=row["pending"],
        lag_seconds=max(0.0, row["lag"]),
    )


async def fetch_scopes(conn: asyncpg.Connection | asyncpg.Pool, kind: ScopeKind) -> list[Scope]:
    """The folders (or registries, repositories) that hold images, by id."""
    rows = await conn.fetch(SELECT_SCOPE_KEYS, f"{kind.value}:")
    return [Scope(kind, r["scope_key"].split(":", 1)[1]) for r in rows]


async def scope_known(conn: asyncpg.Connection | asyncpg.Pool, scope: Scope) -> bool:
    """Whether the index ever held an image of ``scope`` (it may hold none now)."""
    return bool(await conn.fetchval(SCOPE_KNOWN, scope_key(scope), scope.kind.value, scope.id))


async def fetch_layer_report(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    limit: int = DEFAULT_LAYERS,
    reclaimable_limit: int = DEFAULT_RECLAIMABLE,
    repositories_per_layer: int = REPOSITORIES_PER_LAYER,
) -> LayerReport:
    """The whole index's top shared layers by bytes saved and its largest reclaimable blobs."""
    layers = await conn.fetch(SELECT_TOP_LAYERS, limit, repositories_per_layer)
    reclaimable = await conn.fetch(SELECT_RECLAIMABLE, reclaimable_limit)
    totals = await fetch_stats(conn, None)
    return LayerReport(
        layers=tuple(
            LayerSavings(
                digest=digest_text(r["digest"]),
                size=r["size"],
                ref_count=r["ref_count"],
                repository_count=r["repository_count"],
                repositories=tuple(r["repositories"]),
            )
            for r in layers
        ),
        reclaimable=tuple(
            ReclaimableBlob(
                digest=digest_text(r["digest"]),
                size=r["size"],
                orphaned_at=_rfc3339(r["orphaned_at"]),
            )
            for r in reclaimable
        ),
        reclaimable_blobs=totals.reclaimable_blobs,
        reclaimable_bytes=totals.reclaimable_bytes,
        freshness=totals.freshness,
    )


async def fetch_image_usage(
    conn: asyncpg.Connection | asyncpg.Pool,
    image_id: str,
    scope: Scope | None = None,
    *,
    related_limit: int = DEFAULT_RELATED,
) -> ImageUsage | None:
    """One image's unique and shared bytes and its base and derived images within a scope.

    ``None`` when the index has no such image.
    """
    image = await conn.fetchrow(SELECT_IMAGE, image_id)
    if image is None:
        return None
    freshness = await fetch_freshness(conn)
    kind, ident = _scope_params(scope)
    in_scope = _image_in_scope(scope, image["name"], image["registry_id"], image["folder_id"])
    # the whole index's counts are live and hold the image's own rows; a scope's are
    # folded, and hold them once the image is folded
    own_counted = in_scope and (scope is None or image["folded"])
    unique = shared = 0
    for row in await conn.fetch(SELECT_IMAGE_DIGESTS, image_id, kind, ident):
        others = row["scope_refs"] - (row["rows"] if own_counted else 0)
        if others > 0:
            shared += row["size"]
        else:
            unique += row["size"]

    layers: list[bytes] = list(image["layers"])
    chain = b"".join(chain_key_part(d) for d in layers[:CHAIN_LAYERS])
    count = len(layers)
    bases = await _base_images(conn, image_id, chain, count, layers, kind, ident, related_limit)
    derived = await _derived_images(
        conn, image_id, chain, count, layers, kind, ident, related_limit
    )
    return ImageUsage(
        image_id=image_id,
        scope=scope,
        unique_bytes=unique,
        shared_bytes=shared,
        base_images=tuple(bases),
        derived_images=tuple(derived),
        freshness=freshness,
    )


def _image_in_scope(
    scope: Scope | None, name: str, registry_id: str, folder_id: str | None
) -> bool:
    if scope is None:
        return True
    if scope.kind is ScopeKind.REPOSITORY:
        return name == scope.id
    if scope.kind is ScopeKind.REGISTRY:
        return registry_id == scope.id
    return folder_id == scope.id


async def _base_images(
    conn: asyncpg.Connection | asyncpg.Pool,
    image_id: str,
    chain: bytes,
    count: int,
    layers: list[bytes],
    kind: str,
    ident: str,
    limit: int,
) -> list[RelatedImage]:
    """Images whose layers are a proper prefix of these, nearest (longest prefix) first:
    per prefix key, pages of candidates in index order until ``limit`` are found."""
    found: list[RelatedImage] = []
    for prefix in reversed(base_chain_keys(chain, count)):
        after = ""
        while len(found) < limit:
            page = min(limit - len(found) + 16, 1000)
            rows = await conn.fetch(
                SELECT_BASE_CANDIDATES,
                prefix,
                count,
                image_id,
                layers,
                kind,
                ident,
                page,
                after,
            )
            found += [_related(r) for r in rows if r["ok"]]
            if len(rows) < page:
                break
            after = max(r["image_id"] for r in rows)
        if len(found) >= limit:
            break
    return found[:limit]


async def _derived_images(
    conn: asyncpg.Connection | asyncpg.Pool,
    image_id: str,
    chain: bytes,
    count: int,
    layers: list[bytes],
    kind: str,
    ident: str,
    limit: int,
) -> list[RelatedImage]:
    """Images whose layers start with these, in key order: keyset pages over the chain
    index until ``limit`` are found (a candidate whose digests differ is skipped)."""
    upper = chain_successor(chain) or _TOP_KEY
    found: list[RelatedImage] = []
    # start the keyset at the range's own start (a row comparison from the very
    # beginning would make the index scan walk from the first key)
    after: tuple[bytes, str] = (chain, "")
    page = min(limit + 16, 1000)
    while len(found) < limit:
        rows = await conn.fetch(
            SELECT_DERIVED_CANDIDATES,
            chain,
            upper,
            count,
            image_id,
            layers,
            kind,
            ident,
            after[0],
            after[1],
            page,
        )
        found += [_related(r) for r in rows if r["ok"]]
        if len(rows) < page:
            break
        after = (rows[-1]["chain"], rows[-1]["image_id"])
    return found[:limit]


def _related(row: asyncpg.Record) -> RelatedImage:
    return RelatedImage(
        id=row["image_id"],
        name=row["name"],
        digest=row["digest"],
        layer_count=row["layer_count"],
        tags=tuple(row["tags"] or ()),
    )


def chain_key_part(key: bytes) -> bytes:
    """The 4-byte chain part of one layer's stored digest key (``stats_chain_part`` in SQL)."""
    return hashlib.md5(key, usedforsecurity=False).digest()[:CHAIN_PART_BYTES]


def chain_part(digest: str) -> bytes:
    """The 4-byte chain part of one layer digest."""
    return chain_key_part(digest_key(digest))


def base_chain_keys(chain: bytes, layer_count: int) -> list[bytes]:
    """The chain keys a base of an image with this chain may have: each proper prefix.

    A chain holds at most 256 layers; for a longer image, its whole (truncated)
    chain is a candidate too, the layer count and digests settle it.
    """
    parts = len(chain) // CHAIN_PART_BYTES
    top = parts if parts < layer_count else layer_count - 1
    return [chain[: k * CHAIN_PART_BYTES] for k in range(top + 1)]


def chain_successor(chain: bytes) -> bytes | None:
    """The smallest key greater than every key that starts with ``chain`` (None: no bound)."""
    stripped = chain.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _rfc3339(value: object) -> str:
    if value is None:
        return ""
    assert isinstance(value, datetime)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
