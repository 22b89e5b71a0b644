-- "Which images hold a blob" through 4-byte hashes of the digests (issue 15, the
-- index's footprint; docs/INDEXES.md).
--
-- The GIN index of sql/090 keyed each distinct digest by its 32-byte key: ~245 bytes
-- an image at 1,000,000 simulator images, the biggest index of `images`. Keyed by the
-- digest's CRC-32C (PostgreSQL 18's crc32c, a bigint below 2^32) instead, the same
-- postings take half the space (grown the way the ingest grows it, 1,000 images a
-- statement: 24.7 -> 12.0 MB at 100,000 images).
--
-- A hash names a digest only almost surely: two digests may share one. The index
-- finds the images that may hold a blob, and every query checks the array itself
-- (mirror/api/blobs.py, HOLDS_BLOB), so an image holding only the other digest of a
-- colliding pair is never answered (tests/integration/test_blob_hashes.py).
CREATE FUNCTION mirror_blob_hashes(keys bytea[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ARRAY(SELECT crc32c(k) FROM unnest(keys) AS k);

-- The pending list as sql/090 sized it (a lookup reads it all).
CREATE INDEX images_blob_hashes ON images USING gin (mirror_blob_hashes(blob_digests))
    WITH (gin_pending_list_limit = 128);
DROP INDEX images_blob_digests;

-- The planner knows how many images hold a blob from the statistics ANALYZE keeps for
-- the index's expression, which a new index has none of (and an upgraded index whose
-- rows do not change would not get from autovacuum): without them it walked the
-- primary key for every digest, ~460 ms a lookup at 1,000,000 images.
ANALYZE images;
