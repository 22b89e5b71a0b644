"""Today's ingest writing an index of a schema before sql/120 (the upgrade tests that fill
an older index through the ingest): the image row held the digest's text and the
registry's id. The staging table is today's (the digest's key): the statement of then,
written out, converts it back."""

from __future__ import annotations

import pytest

from mirror.ingest import merge

# merge.UPSERT_IMAGES as it was before sql/120, but for mirror_digest_text(s.digest).
UPSERT_IMAGES_119 = """
INSERT INTO images AS i (
    id, name, registry_id, folder_id, digest, compressed_size, created_ns,
    doc_template, content_hash, blob_digests, blob_sizes, blob_config, blob_ids
)
SELECT s.id, s.name, s.registry_id, COALESCE(s.folder_id, r.folder_id),
       mirror_digest_text(s.digest),
       s.compressed_size, s.created_ns, s.doc_template,
       s.content_hash, s.blob_digests, s.blob_sizes, s.blob_config, s.blob_ids
FROM ingest_stage_images AS s
LEFT JOIN registries AS r ON r.registry_id = s.registry_id
ORDER BY s.id
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name,
    registry_id = EXCLUDED.registry_id,
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


def ingest_before_120(monkeypatch: pytest.MonkeyPatch) -> None:
    """The current ingest writing image rows as it did before sql/120."""
    monkeypatch.setattr(merge, "UPSERT_IMAGES", UPSERT_IMAGES_119)
