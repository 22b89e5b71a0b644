-- A lone digest found through a hash index (issue 15, the index's footprint;
-- docs/STATS.md, "Other details").
--
-- stats_lone_digests (~2.3 rows an image) was keyed by a B-tree over the digest's 32
-- bytes, ~59 bytes a row: more than half the table's own heap. Every reader looks a
-- digest up by equality (the fold's promotion, `= ANY` of its batch; the usage and
-- layer queries, one digest at a time) and nothing reads the table in digest order,
-- so a hash index (4 bytes of hash a key) serves them all. It cannot back a primary
-- key; the exclusion constraint over it keeps a digest to one row all the same. The
-- fold is the table's only writer and inserts no row that is there already
-- (sql/routines/stats.sql), so no statement needs the key as an ON CONFLICT arbiter.
ALTER TABLE stats_lone_digests
    DROP CONSTRAINT stats_lone_digests_pkey,
    ADD CONSTRAINT stats_lone_digests_digest EXCLUDE USING hash (digest WITH =);
