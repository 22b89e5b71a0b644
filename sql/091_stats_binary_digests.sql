-- The stats tables and their change log keep blob digests as the 32-byte keys of
-- sql/090, and the log carries an image's blob references as its row holds them
-- (a config flag instead of a per-blob layer flag). The aggregates are then
-- recomputed from the new arrays by the routine file (stats_folded.rebuild_pending),
-- keeping what scopes referenced once; pending log rows are converted and folded first.

-- image_blobs went with sql/090 (its triggers with it); a layer's chain key is now
-- the md5 of its 32-byte key (sql/routines/stats.sql).
DROP FUNCTION IF EXISTS stats_log_image_blobs();
DROP FUNCTION IF EXISTS stats_chain_part(text);

ALTER TABLE stats_registry_refs ALTER COLUMN digest TYPE bytea USING mirror_digest_key(digest);
ALTER TABLE stats_folder_refs ALTER COLUMN digest TYPE bytea USING mirror_digest_key(digest);
ALTER TABLE stats_repository_refs ALTER COLUMN digest TYPE bytea USING mirror_digest_key(digest);
ALTER TABLE stats_lone_digests ALTER COLUMN digest TYPE bytea USING mirror_digest_key(digest);

-- The change log: a row's blob references as the image row holds them (config
-- flag instead of a per-blob layer flag). Rows not folded yet are converted.
ALTER TABLE stats_changes ADD COLUMN config boolean NOT NULL DEFAULT false,
                          ADD COLUMN digest_keys bytea[];
UPDATE stats_changes
SET config = coalesce(NOT layer[1], false),
    digest_keys = ARRAY(SELECT mirror_digest_key(u.d) FROM unnest(digests) WITH ORDINALITY AS u(d, o)
                        ORDER BY u.o)
WHERE digests IS NOT NULL;
ALTER TABLE stats_changes DROP COLUMN layer, DROP COLUMN digests;
ALTER TABLE stats_changes RENAME COLUMN digest_keys TO digests;

UPDATE stats_folded SET rebuild_pending = true;
