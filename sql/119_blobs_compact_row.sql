-- A blobs row in an order of columns that wastes no alignment, its count in 4 bytes
-- (issue 15, the index's footprint; docs/INDEXES.md, "blobs").
--
-- The row was (digest bytea, size bigint, ref_count bigint, first_seen, orphaned_at):
-- the 33 bytes of digest put size on an 8-byte boundary after 7 bytes of padding, and
-- the row took 88 bytes. With the fixed-width columns first and the count as an
-- integer (the references of one digest: at most the images times their layers, far
-- below 2^31) it takes 80 while the blob is held (orphaned_at NULL), ~2.6 rows an
-- image. Readers and writers name every column, so nothing else changes. The table is
-- written anew; its indexes are made again as sql/001 and sql/040 made them.
CREATE TABLE blobs_new (
    size        bigint NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    orphaned_at timestamptz,
    ref_count   integer NOT NULL DEFAULT 0,
    digest      bytea PRIMARY KEY
);
INSERT INTO blobs_new (size, first_seen, orphaned_at, ref_count, digest)
SELECT size, first_seen, orphaned_at, ref_count, digest FROM blobs ORDER BY digest;
DROP TABLE blobs;
ALTER TABLE blobs_new RENAME TO blobs;
ALTER INDEX blobs_new_pkey RENAME TO blobs_pkey;
CREATE INDEX blobs_orphaned ON blobs (digest) WHERE ref_count = 0;
CREATE INDEX stats_blobs_saved ON blobs (((ref_count - 1) * size) DESC, digest)
    WHERE ref_count > 1;
CREATE INDEX stats_blobs_reclaimable ON blobs (size DESC, digest) WHERE ref_count = 0;

-- The stats' TRUNCATE trigger goes with the old table; its routine file
-- (sql/routines/stats.sql) makes it again, as after every migration
-- (mirror/store/migrate.py).
ANALYZE blobs;
