-- A tag row's digest as its 32-byte key, and no column nothing reads (issue 15,
-- the index's footprint; docs/INDEXES.md, "Tags").
--
-- tags.digest held the tagged image's digest as text ("sha256:" and 64 hex
-- digits, 72 bytes); it is now the digest's key (mirror_digest_key, sql/090: the
-- 32 bytes of a sha256, any other text kept losslessly), converted at the edges
-- (mirror/ingest/tags.py: digest_key in, mirror_digest_text out) as blobs and the
-- stats tables do. updated_at was written on every change and read by nothing.
-- ~72 bytes a row, ~1.1 rows an image at the simulator's. The table is written
-- anew (a column's type changes): compact from the start.
ALTER TABLE tags
    ALTER COLUMN digest TYPE bytea USING mirror_digest_key(digest),
    DROP COLUMN updated_at;
