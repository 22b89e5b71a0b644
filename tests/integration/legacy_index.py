"""Writing an index at the schema before sql/090 (``image_blobs`` rows, text digests), for
the upgrade tests: what the ingest wrote then, in plain SQL, told to a ReferenceIndex alike.

Only for databases built from the migrations before 090 (``old_schema``); the
current shape is written by ``tests.integration.stats_world.IndexWriter``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import orjson

from mirror.model import Image
from mirror.stats.reference import ReferenceIndex
from tests.postgres_fixture import schema_before

FROZEN_ROUTINES = Path(__file__).resolve().parents[1] / "data" / "schema_080" / "routines"

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
DELETE_IMAGE_BLOBS = "DELETE FROM image_blobs WHERE image_id = ANY($1::text[])"
DELETE_IMAGES = "DELETE FROM images WHERE id = ANY($1::text[])"
DROP_REFS = """
UPDATE blobs AS b SET ref_count = b.ref_count - x.n,
       orphaned_at = CASE WHEN b.ref_count - x.n = 0 THEN now() END
FROM unnest($1::text[], $2::bigint[]) AS x(d, n)
WHERE b.digest = x.d
"""
SET_FOLDER = """
INSERT INTO registries (registry_id, folder_id) VALUES ($1, $2)
ON CONFLICT (registry_id) DO UPDATE SET folder_id = excluded.folder_id
"""


def old_schema(target: Path, last_version: int, *, routines: bool) -> Path:
    """A copy of the migrations up to ``last_version`` (and, with ``routines``, the stats
    routines as they were at 080) in ``target``: what ``apply_migrations`` builds the
    database of an older mirror from."""
    return schema_before(target, last_version + 1, routines=FROZEN_ROUTINES if routines else None)


class LegacyWriter:
    """Pushes, deletes and registry folders as the ingest wrote them before sql/090."""

    def __init__(self, conn: asyncpg.Connection, reference: ReferenceIndex | None = None) -> None:
        self.conn = conn
        self.reference = reference if reference is not None else ReferenceIndex()

    async def push(self, images: Sequence[Image], folder_id: str | None = None) -> None:
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
        async with self.conn.transaction():
            refs = await self.conn.fetch(REFS_OF, list(image_ids))
            await self.conn.execute(DELETE_IMAGE_BLOBS, list(image_ids))
            await self.conn.execute(DELETE_IMAGES, list(image_ids))
            await self.conn.execute(DROP_REFS, [r["digest"] for r in refs], [r["n"] for r in refs])
        for image_id in image_ids:
            self.reference.images.pop(image_id, None)

    async def set_folder(self, registry_id: str, folder_id: str) -> None:
        await self.conn.execute(SET_FOLDER, registry_id, folder_id)
        self.reference.folder_of[registry_id] = folder_id
