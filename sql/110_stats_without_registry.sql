-- The stats tables without the registry their repository already names (issue 15,
-- the index's footprint; docs/STATS.md, "Other details").
--
-- An image's name is "<registryId>/<repository path>" and its registry is the
-- name's first segment (the ingest derives it so: mirror/ingest/staging.py,
-- registry_of), so stats_lone_digests.registry_id (~2.3 rows an image) and
-- stats_images.registry_id repeated the first segment of `repository` / `name`:
-- ~21 bytes a row. The stats routines (sql/routines/stats.sql) and queries
-- (mirror/stats/queries.py) take split_part(repository, '/', 1). A row that says
-- otherwise (images written by hand with another registry_id) stops the upgrade,
-- nothing changed.
DO $$
BEGIN
    IF EXISTS (SELECT FROM stats_lone_digests WHERE registry_id <> split_part(repository, '/', 1))
       OR EXISTS (SELECT FROM stats_images WHERE registry_id <> split_part(name, '/', 1)) THEN
        RAISE EXCEPTION 'stats rows whose registry is not the first segment of their repository '
            '(images whose registry_id is not the first segment of their name): correct those '
            'images, run SELECT stats_rebuild(), then upgrade again';
    END IF;
END
$$;

ALTER TABLE stats_lone_digests DROP COLUMN registry_id;
ALTER TABLE stats_images DROP COLUMN registry_id;
