"""Writing the index the way the ingest does, in plain SQL, for the stats tests.

``IndexWriter`` pushes, re-tags and deletes images (images + image_blobs rows,
blobs.ref_count kept as the count of image_blobs rows per digest, orphaned rows
kept) and records registries' folders; ``ReferenceIndex`` is told the same so
tests compare the served figures with the brute force.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import asyncpg
import orjson

from mirror.model import Blob, Image
from mirror.stats.folder import fold_once
from mirror.stats.reference import ReferenceIndex

# tags travel as one comma-joined text per image (arrays of arrays must be rectangular)
INSERT_IMAGES = """
INSERT INTO images (id, name, registry_id, folder_id, digest, compressed_size, created_ns, tags,
                    doc, content_hash)
SELECT id, name, registry_id, folder_id, digest, compressed_size,
       mirror_rfc3339_ns(doc ->> 'createdAt'), string_to_array(tags, ','), doc, content_hash
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
            $7::text[], $8::json[], $9::bytea[])
     AS x(id, name, registry_id, folder_id, digest, compressed_size, tags, doc, content_hash)
"""
INSERT_IMAGE_BLOBS = """
INSERT INTO image_blobs (image_id, registry_id, position, kind, digest, blob_id, size)
SELECT * FROM unnest($1::text[], $2::text[], $3::smallint[], $4::char[], $5::text[], $6::text[],
                     $7::bigint[])
"""
ADD_REFS = """
INSERT INTO blobs AS b (digest, size, ref_count)
SELECT d, s, n FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS x(d, s, n) ORDER BY d
ON CONFLICT (digest) DO UPDATE
SET ref_count = b.ref_count + excluded.ref_count, orphaned_at = NULL
"""
REFS_OF = """
SELECT digest, count(*) AS n FROM image_blobs WHERE image_id = ANY($1::text[])
GROUP BY digest ORDER BY digest
"""
# image blob rows first, then the images: the order mirror.ingest.merge.delete_images keeps
DELETE_IMAGE_BLOBS = "DELETE FROM image_blobs WHERE image_id = ANY($1::text[])"
DELETE_IMAGES = "DELETE FROM images WHERE id = ANY($1::text[])"
DROP_REFS = """
UPDATE blobs AS b SET ref_count = b.ref_count - x.n,
       orphaned_at = CASE WHEN b.ref_count - x.n = 0 THEN now() END
FROM unnest($1::text[], $2::bigint[]) AS x(d, n)
WHERE b.digest = x.d
"""
RETAG = "UPDATE images SET tags = $2::text[], updated_at = now() WHERE id = $1"
SET_FOLDER = """
INSERT INTO registries (registry_id, folder_id) VALUES ($1, $2)
ON CONFLICT (registry_id) DO UPDATE SET folder_id = excluded.folder_id
"""
TRUNCATE_ALL = """
TRUNCATE images, image_blobs, blobs, registries, stats_registry_folders, stats_images,
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
        """New images, in one statement per table as the ingest writes a page.

        The digests' blobs rows are written (and so locked) before image_blobs, as
        the ingest does in one statement: the stats triggers rely on it.
        """
        if not images:
            return
        async with self.conn.transaction():
            await self.conn.execute(
                INSERT_IMAGES,
                [i.id for i in images],
                [i.name for i in images],
                [i.registry_id for i in images],
                [folder_id for _ in images],
                [i.digest for i in images],
                [i.compressed_size for i in images],
                [",".join(i.tags) for i in images],
                [orjson.dumps(i.to_json()).decode() for i in images],
                [hashlib.sha256(orjson.dumps(i.to_json())).digest() for i in images],
            )
            rows = [
                (i.id, i.registry_id, pos, "c" if (i.config and pos == 0) else "l", b)
                for i in images
                for pos, b in enumerate(i.blobs, start=0 if i.config else 1)
            ]
            refs: dict[str, tuple[int, int]] = {}
            for r in rows:
                size, n = refs.get(r[4].digest, (r[4].size, 0))
                refs[r[4].digest] = (size, n + 1)
            digests = sorted(refs)
            await self.conn.execute(
                ADD_REFS, digests, [refs[d][0] for d in digests], [refs[d][1] for d in digests]
            )
            await self.conn.execute(
                INSERT_IMAGE_BLOBS,
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
                [r[4].digest for r in rows],
                [r[4].id for r in rows],
                [r[4].size for r in rows],
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
            refs = await self.conn.fetch(REFS_OF, list(image_ids))
            await self.conn.execute(DELETE_IMAGE_BLOBS, list(image_ids))
            await self.conn.execute(DELETE_IMAGES, list(image_ids))
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
