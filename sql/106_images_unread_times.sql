-- Three columns of `images` nothing reads (issue 15, the index's footprint;
-- docs/INDEXES.md, "`images`: the queries and the index that serves each").
--
-- `created_at` (timestamptz) repeated the upstream's createdAt, which the image's
-- JSON keeps as sent and `created_ns` keeps as the API sorts it; `indexed_at` and
-- `updated_at` were written on every insert and change and read by no query. ~24
-- bytes a row, and the ingest's parse of createdAt a second time (its text to a
-- timestamptz, in PostgreSQL: a createdAt Python accepted and PostgreSQL did not
-- failed the page's merge). Rows written before keep the bytes until rewritten.
ALTER TABLE images
    DROP COLUMN created_at,
    DROP COLUMN indexed_at,
    DROP COLUMN updated_at;
