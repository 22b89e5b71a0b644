"""Writing the index the way the ingest does, in plain SQL, for the stats tests.

``IndexWriter`` pushes, re-tags and deletes images (images rows with their blob
references as arrays, blobs.ref_count kept as the count of references per digest,
orphaned rows kept) and records registries' folders; ``ReferenceIndex`` is told the same so
tests compare the served figures with the brute force.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import asyncpg
import orjson

from mirror.model import Blob, Image, digest_key
from mirror.stats.folder import fold_once
from mirror.stats.reference import ReferenceIndex

# an image's blob references (the hex of each 32-byte digest key, and the sizes) travel
# as one comma-joined text per image (arrays of arrays must be rectangular); its tags are
# its JSON's. Since sql/120 the digest is its key and the registry its number ({registry},
# {digest}: a world may span the upgrade).
INSERT_IMAGES = """
INSERT INTO images (id, name, {registry}, folder_id, digest, compressed_size, created_ns,
                    doc, content_hash, blob_digests, blob_sizes, blob_config)
SELECT id, name, {registry_id}, folder_id, {digest}, compressed_size,
       mirror_rfc3339_ns(doc ->> 'createdAt'), doc, content_hash,
       ARRAY(SELECT decode(h, 'hex') FROM unnest(string_to_array(digests, ',')) WITH ORDINALITY
                 AS u(h, o) ORDER BY o),
       string_to_array(sizes, ',')::bigint[], config
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
            $7::json[], $8::bytea[], $9::text[], $10::text[], $11::boolean[])
     AS x(id, name, registry_id, folder_id, digest, compressed_size, doc, content_hash,
          digests, sizes, config)
"""
# Whether the index is at sql/120 or later.
IMAGES_KEYED = "SELECT to_regclass('image_registries') IS NOT NULL"
# The columns of an image row for each: (registry column, its value, the digest's value).
IMAGE_COLUMNS_120 = ("registry", "image_registry(registry_id)", "mirror_digest_key(digest)")
IMAGE_COLUMNS_BEFORE_120 = ("registry_id", "registry_id", "digest")
ADD_REFS = """
INSERT INTO blobs AS b (digest, size, ref_count)
SELECT d, s, n FROM unnest($1::bytea[], $2::bigint[], $3::bigint[]) AS x(d, s, n) ORDER BY d
ON CONFLICT (digest) DO UPDATE
SET ref_count = b.ref_count + excluded.ref_count, orphaned_at = NULL
"""
# the images go with their references (as mirror.ingest.merge.delete_images does)
DELETE_IMAGES = """
WITH gone AS (DELETE FROM images WHERE id = ANY($1::text[]) RETURNING blob_digests)
SELECT d AS digest, count(*) AS n FROM gone, unnest(gone.blob_digests) AS d
GROUP BY d ORDER BY d
"""
DROP_REFS = """
UPDATE blobs AS b SET ref_count = b.ref_count - x.n,
       orphaned_at = CASE WHEN b.ref_count - x.n = 0 THEN now() END
FROM unnest($1::bytea[], $2::bigint[]) AS x(d, n)
WHERE b.digest = x.d
"""
# the image's JSON with other tags (sql/113: the JSON holds an image's tags)
RETAG = "UPDATE images SET doc = jsonb_set(doc::jsonb, '{tags}', to_jsonb($2::text[]))::json WHERE id = $1"
SET_FOLDER = """
INSERT INTO registries (registry_id, folder_id) VALUES ($1, $2)
ON CONFLICT (registry_id) DO UPDATE SET folder_id = excluded.folder_id
"""
TRUNCATE_ALL = """
TRUNCATE images, blobs, registries, stats_registry_folders, stats_images,
         stats_registry_refs, stats_folder_refs, stats_repository_refs, stats_totals,
         stats_changes, stats_lone_digests
"""


def blob_id(registry_id: str, digest: str) -> str:
    """Blob ids are per registry: the same digest has a different id in each."""
    return "crb" + hashlib.sha1(f"{registry_id}/{digest}".encode()).hexdigest()[:17]


def make_image(
    image_id: str,
    name: str,
    config: tuple[str, int] | None,
    layers: Sequence[tuple[str, int]],
    tags: Sequence[str] = (),
    compressed_size: int | None = None,
) -> Image:
    registry_id = name.split("/", 1)[0]
    return Image(
        id=image_id,
        name=name,
        digest="sha256:" + hashlib.sha256(image_id.encode()).hexdigest(),
        compressed_size=(
            sum(size for _, size in layers) if compressed_size is None else compressed_size
        ),
        config=Blob(blob_id(registry_id, config[0]), config[0], config[1]) if config else None,
        layers=tuple(Blob(blob_id(registry_id, d), d, s) for d, s in layers),
        tags=tuple(tags),
        created_at="2025-01-01T00:00:00Z",
    )


class IndexWriter:
    """Applies upstream changes to the index in SQL and to a ReferenceIndex alike."""

    def __init__(self, conn: asyncpg.Connection, reference: ReferenceIndex | None = None) -> None:
        self.conn = conn
        self.reference = reference if reference is not None else ReferenceIndex()

    async def reset(self) -> None:
        await self.conn.execute(TRUNCATE_ALL)
        self.reference = ReferenceIndex()

    async def settle(self) -> int:
        """Fold every change written so far into the stats (what the folder does)."""
        return await fold_once(self.conn, wait=True) or 0

    async def push(self, images: Sequence[Image], folder_id: str | None = None) -> None:
        """New images, in one statement per table as the ingest writes a page."""
        if not images:
            return
        async with self.conn.transaction():
            keyed = await self.conn.fetchval(IMAGES_KEYED)
            column, registry, digest = IMAGE_COLUMNS_120 if keyed else IMAGE_COLUMNS_BEFORE_120
            await self.conn.execute(
                INSERT_IMAGES.format(registry=column, registry_id=registry, digest=digest),
                [i.id for i in images],
                [i.name for i in images],
                [i.registry_id for i in images],
                [folder_id for _ in images],
                [i.digest for i in images],
                [i.compressed_size for i in images],
                [orjson.dumps(i.to_json()).decode() for i in images],
                [hashlib.sha256(orjson.dumps(i.to_json())).digest() for i in images],
                [",".join(digest_key(b.digest).hex() for b in i.blobs) for i in images],
                [",".join(str(b.size) for b in i.blobs) for i in images],
                [i.config is not None for i in images],
            )
            refs: dict[bytes, tuple[int, int]] = {}
            for blob in (b for i in images for b in i.blobs):
                size, n = refs.get(digest_key(blob.digest), (blob.size, 0))
                refs[digest_key(blob.digest)] = (size, n + 1)
            digests = sorted(refs)
            await self.conn.execute(
                ADD_REFS, digests, [refs[d][0] for d in digests], [refs[d][1] for d in digests]
            )
        for image in images:
            self.reference.images[image.id] = image
            self.reference.history[image.id] = image
        if folder_id is not None:
            for image in images:
                self.reference.folder_of.setdefault(image.registry_id, folder_id)

    async def delete(self, image_ids: Sequence[str]) -> None:
        if not image_ids:
            return
        async with self.conn.transaction():
            refs = await self.conn.fetch(DELETE_IMAGES, list(image_ids))
            await self.conn.execute(DROP_REFS, [r["digest"] for r in refs], [r["n"] for r in refs])
        for image_id in image_ids:
            self.reference.images.pop(image_id, None)

    async def retag(self, image_id: str, tags: Sequence[str]) -> None:
        await self.conn.execute(RETAG, image_id, list(tags))
        image = self.reference.images[image_id]
        self.reference.images[image_id] = Image(
            image.id,
            image.name,
            image.digest,
            image.compressed_size,
            image.config,
            image.layers,
            tuple(tags),
            image.created_at,
        )

    async def set_folder(self, registry_id: str, folder_id: str) -> None:
        """The registries row a folder walk writes."""
        await self.conn.execute(SET_FOLDER, registry_id, folder_id)
        self.reference.folder_of[registry_id] = folder_id
