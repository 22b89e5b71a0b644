-- Fewer and smaller rows (issue 15): an image's blob references move onto its
-- own row as arrays, and blob digests are stored as 32 bytes instead of the
-- 71-character text "sha256:<64 hex>".
--
-- image_blobs held ~8.5 rows per image (~435 bytes a row with its two indexes:
-- about 3.6 KB per image, more than the upstream's JSON). Now:
--   images.blob_digests  bytea[]  the config (when it has a digest) then the
--                                 layers in order, as mirror_digest_key below
--   images.blob_sizes    bigint[] their sizes, same order
--   images.blob_config   boolean  whether blob_digests[1] is the config
-- A blob's id (per registry) stays in the image's doc, where the API reads it;
-- the image's registry is images.registry_id. "Which images hold a blob" is a
-- GIN index over blob_digests (images_blob_digests).
--
-- Digests: blobs, the stats tables and the stats change log keep the 32-byte
-- key. Every digest the ingest accepts is "sha256:" and 64 lower-case hex
-- digits (mirror/upstream/messages.py); any other text (an index written before
-- that check, or by hand) is kept losslessly as its UTF-8 bytes padded with
-- NUL to at least 33 bytes, so a key of 32 bytes is always a sha256. Python
-- converts at the edges (mirror.model.digest_key / digest_text), SQL with the
-- two functions below.
--
-- The stats tables follow in sql/091 (a separate file: an index without the stats
-- migrations, as bench/stats_bench.py builds one, takes this one alone).

CREATE FUNCTION mirror_digest_key(digest text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN digest ~ '^sha256:[0-9a-f]{64}$' THEN decode(substr(digest, 8), 'hex')
            ELSE convert_to(digest, 'UTF8')
                 || decode(repeat('00', greatest(0, 33 - octet_length(digest))), 'hex')
       END;

CREATE FUNCTION mirror_digest_text(digest bytea) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN octet_length(digest) = 32 THEN 'sha256:' || encode(digest, 'hex')
            ELSE convert_from(rtrim(digest, '\x00'::bytea), 'UTF8')
       END;

-- Nothing may be lost: every image_blobs row has its image (the writers delete
-- the rows first) and a config row is the image's first.
DO $$
DECLARE
    n bigint;
BEGIN
    SELECT count(*) INTO n FROM image_blobs b WHERE NOT EXISTS (SELECT 1 FROM images i WHERE i.id = b.image_id);
    IF n > 0 THEN
        RAISE EXCEPTION '% image_blobs row(s) name no image: delete them (and lower blobs.ref_count by as many) before upgrading', n;
    END IF;
    SELECT count(*) INTO n FROM image_blobs c
    WHERE c.kind = 'c'
      AND EXISTS (SELECT 1 FROM image_blobs o WHERE o.image_id = c.image_id AND o.position < c.position);
    IF n > 0 THEN
        RAISE EXCEPTION '% image_blobs config row(s) are not their image''s first row: the arrays cannot say so', n;
    END IF;
END
$$;

ALTER TABLE images
    ADD COLUMN blob_digests bytea[] NOT NULL DEFAULT '{}',
    ADD COLUMN blob_sizes bigint[] NOT NULL DEFAULT '{}',
    ADD COLUMN blob_config boolean NOT NULL DEFAULT false;

UPDATE images AS i
SET blob_digests = b.digests, blob_sizes = b.sizes, blob_config = b.config
FROM (SELECT image_id,
             array_agg(mirror_digest_key(digest) ORDER BY position) AS digests,
             array_agg(size ORDER BY position) AS sizes,
             (array_agg(kind ORDER BY position))[1] = 'c' AS config
      FROM image_blobs GROUP BY image_id) AS b
WHERE i.id = b.image_id;

DROP TABLE image_blobs;

-- A small pending list: GIN's default (4 MB) made every lookup scan ~200 pages of
-- it (10 ms for a digest one image holds); without one (fastupdate off) each insert
-- goes into the tree at once (the images upsert ~25 % slower). 128 kB: ~0.2 ms.
CREATE INDEX images_blob_digests ON images USING gin (blob_digests) WITH (gin_pending_list_limit = 128);

-- The arrays take an image row past 2 KB (~2,040 bytes for the simulator's images),
-- where PostgreSQL tries to compress the doc on every write: it fails (random hex
-- digests and ids do not compress by a quarter), and the attempt made the images
-- upsert ~1.9x slower (bench/RESULTS.md, "Ingest"). Rows stay inline and
-- uncompressed up to a page (larger ones are still compressed and moved).
ALTER TABLE images SET (toast_tuple_target = 8160);

ALTER TABLE blobs ALTER COLUMN digest TYPE bytea USING mirror_digest_key(digest);
