-- A page memo keeps one digest of its images' content hashes, not the hashes
-- (issue 15, the index's footprint; docs/INDEXES.md, "The page memo").
--
-- A memo row held each image's 16-byte content hash (bytea[], ~20 bytes an image with
-- the array's element header; ~51 bytes an image with the ids, in TOAST). The check
-- of a remembered page (mirror/ingest/memo.py, CHECK_AND_SEE) only asks whether the
-- index's hashes of those ids, in id order, are all the remembered ones: the SHA-256
-- of their concatenation answers that (each hash is 16 bytes, so a missing, changed
-- or extra image changes the concatenation). The rows kept are converted, so the
-- first re-sync after the upgrade still skips the pages it may; the table is written
-- anew, without the old column's bytes.
CREATE TABLE ingest_page_memo_new (
    walk_key      text NOT NULL,
    page_token    text NOT NULL,
    body_hash     bytea NOT NULL,
    next_token    text NOT NULL,
    ids           text[] NOT NULL,
    hashes_digest bytea NOT NULL,
    registries    text[] NOT NULL,
    PRIMARY KEY (walk_key, page_token)
);
INSERT INTO ingest_page_memo_new
    (walk_key, page_token, body_hash, next_token, ids, hashes_digest, registries)
SELECT m.walk_key, m.page_token, m.body_hash, m.next_token, m.ids,
       (SELECT sha256(coalesce(string_agg(u.h, ''::bytea ORDER BY u.n), ''::bytea))
        FROM unnest(m.hashes) WITH ORDINALITY AS u (h, n)),
       m.registries
FROM ingest_page_memo AS m;
DROP TABLE ingest_page_memo;
ALTER TABLE ingest_page_memo_new RENAME TO ingest_page_memo;
ALTER INDEX ingest_page_memo_new_pkey RENAME TO ingest_page_memo_pkey;
