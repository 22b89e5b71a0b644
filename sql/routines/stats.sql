-- Every stats function and trigger, current bodies (docs/STATS.md, "How the
-- figures stay cheap"). Re-applied by the migrator whenever this file changes
-- (mirror/store/migrate.py: routines); sql/040-043 hold the history of the
-- in-transaction design that sql/080_stats_folded.sql replaced.
--
-- Writers pay for one appended row per image per statement (stats_log_*);
-- stats_fold() (called by mirror/stats/folder.py, one batch a transaction)
-- turns the log into the aggregates:
--
--   stats_totals           per scope key ('all', 'folder:ID', 'registry:ID',
--       'repository:NAME'): images, compressed, logical, blobs (distinct digests
--       referenced), stored, reclaimable. Written by the folder only: one row
--       read serves a scope.
--   stats_registry_refs / stats_folder_refs / stats_repository_refs
--       per (scope, digest): how many blob references of the scope's images
--       (images.blob_digests entries) carry the
--       digest. A count crossing zero moves the scope's distinct blobs, stored
--       and reclaimable figures; rows stay at 0: "referenced in the scope once,
--       by nothing now" is the scope's reclaimable set. The whole index counts a
--       digest as the sum of its repository rows.
--   stats_lone_digests     a digest one image blob row references and nothing
--       else ever did: count 1 in that row's registry, repository and folder,
--       without rows in the three tables above (moved there when it changes).
--   stats_images           per image: repository, blob rows and the layer chain
--       key (lineage lookups by prefix).
--   stats_repositories     each repository name once, with the number the three
--       tables above name it by (sql/114); the fold numbers its batch's names.
--   A repository's registry is its name's first segment, split_part(name, '/', 1)
--   (sql/110: the tables above no longer store it).
--   stats_registry_folders the folder of each registry as far as known.
--   stats_folded           up to where all of the above is exact.

-- The fold's batch table is per session, shaped like stats_changes when it was
-- made: the session applying this file may have folded under an older shape.
DROP TABLE IF EXISTS pg_temp.stats_batch;

-- The 4-byte key of one layer digest (its 32-byte key, sql/090) in a chain
-- (mirror/stats/queries.py, CHAIN_PART_BYTES; 8 bytes before sql/109).
CREATE OR REPLACE FUNCTION stats_chain_part(digest bytea) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN substring(decode(md5(digest), 'hex') FROM 1 FOR 4);

-- An image's layers are its blob digests after the config (images.blob_config).
CREATE OR REPLACE FUNCTION stats_layer_count(digests bytea[], config boolean) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN greatest(coalesce(cardinality(digests), 0) - config::int, 0);

-- The chain key of an image's layers: the parts of its first 256 layers.
CREATE OR REPLACE FUNCTION stats_chain(digests bytea[], config boolean) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN coalesce((SELECT string_agg(stats_chain_part(u.d), ''::bytea ORDER BY u.o)
                 FROM unnest(digests[1 + config::int : 256 + config::int]) WITH ORDINALITY AS u(d, o)),
                ''::bytea);


-- == The change log (inside the writers' transactions: appends only) ==========

-- An added or removed image is one row carrying its blob references (the
-- arrays of its row); an update logs the image's size or folder change (delta
-- 0, no digests) and, when its blob references changed, the old ones out (-1)
-- and the new ones in (+1) as kind 'b'. Every row with digests moves the blob
-- counts by its delta. A row's registry id is its name's first segment (the image row
-- holds the registry's number since sql/120; the stats keep ids).
CREATE OR REPLACE FUNCTION stats_log_images() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO stats_changes
            (kind, image_id, registry_id, name, folder_id, delta, compressed, digests, sizes, config)
        SELECT 'i', id, split_part(name, '/', 1), name, folder_id, 1, compressed_size,
               blob_digests, blob_sizes, blob_config
        FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO stats_changes
            (kind, image_id, registry_id, name, delta, compressed, digests, sizes, config)
        SELECT 'i', id, split_part(name, '/', 1), name, -1, -compressed_size, blob_digests,
               blob_sizes, blob_config
        FROM old_rows;
    ELSE
        -- name and registry are immutable upstream: only the compressed size, the
        -- folder (learned from a folder walk) and the blob references matter
        INSERT INTO stats_changes
            (kind, image_id, registry_id, name, folder_id, delta, compressed, digests, sizes, config)
        SELECT v.kind, n.id, split_part(n.name, '/', 1), n.name, v.folder_id, v.delta, v.compressed,
               v.digests, v.sizes, v.config
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        CROSS JOIN LATERAL (VALUES
            ('i'::"char", CASE WHEN n.folder_id IS DISTINCT FROM o.folder_id THEN n.folder_id END, 0,
             n.compressed_size - o.compressed_size, NULL::bytea[], NULL::bigint[], false),
            ('b', NULL, -1, 0, o.blob_digests, o.blob_sizes, o.blob_config),
            ('b', NULL, 1, 0, n.blob_digests, n.blob_sizes, n.blob_config)
        ) AS v (kind, folder_id, delta, compressed, digests, sizes, config)
        WHERE CASE v.kind
            WHEN 'i' THEN n.compressed_size <> o.compressed_size
                       OR (n.folder_id IS NOT NULL AND n.folder_id IS DISTINCT FROM o.folder_id)
            ELSE (n.blob_digests, n.blob_sizes, n.blob_config)
                     IS DISTINCT FROM (o.blob_digests, o.blob_sizes, o.blob_config)
                 AND cardinality(v.digests) > 0
        END;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION stats_log_registries() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO stats_changes (kind, registry_id, folder_id)
        SELECT 'r', registry_id, folder_id FROM new_rows;
    ELSE
        INSERT INTO stats_changes (kind, registry_id, folder_id)
        SELECT 'r', n.registry_id, n.folder_id
        FROM new_rows n JOIN old_rows o ON o.registry_id = n.registry_id
        WHERE n.folder_id IS DISTINCT FROM o.folder_id;
    END IF;
    RETURN NULL;
END
$$;

-- TRUNCATE fires no row triggers: start the aggregates again from what is left.
CREATE OR REPLACE FUNCTION stats_log_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM stats_recompute(false);
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER stats_log_images_insert AFTER INSERT ON images
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_log_images();
CREATE OR REPLACE TRIGGER stats_log_images_update AFTER UPDATE ON images
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION stats_log_images();
CREATE OR REPLACE TRIGGER stats_log_images_delete AFTER DELETE ON images
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_log_images();
CREATE OR REPLACE TRIGGER stats_log_registries_insert AFTER INSERT ON registries
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_log_registries();
CREATE OR REPLACE TRIGGER stats_log_registries_update AFTER UPDATE ON registries
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION stats_log_registries();
CREATE OR REPLACE TRIGGER stats_log_images_truncate AFTER TRUNCATE ON images
    FOR EACH STATEMENT EXECUTE FUNCTION stats_log_truncated();
CREATE OR REPLACE TRIGGER stats_log_blobs_truncate AFTER TRUNCATE ON blobs
    FOR EACH STATEMENT EXECUTE FUNCTION stats_log_truncated();


-- == Folding (the folder: one batch, one transaction) ==========================

-- Registry r belongs to folder f: move its per-digest refs and totals into the
-- folder's (and out of a previous folder's, should a registry ever move).
CREATE OR REPLACE FUNCTION stats_learn_folder(r text, f text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    previous text;
    sign integer;
    target text;
BEGIN
    SELECT folder_id INTO previous FROM stats_registry_folders WHERE registry_id = r;
    IF previous IS NOT DISTINCT FROM f THEN
        RETURN;
    END IF;
    FOR target, sign IN SELECT * FROM (VALUES (previous, -1), (f, 1)) v(t, s) WHERE t IS NOT NULL LOOP
        WITH moved AS (
            INSERT INTO stats_folder_refs AS fr (folder_id, digest, refs)
            SELECT target, rr.digest, sign * rr.refs
            FROM stats_registry_refs rr WHERE rr.registry_id = r
            ORDER BY rr.digest
            ON CONFLICT (folder_id, digest) DO UPDATE SET refs = fr.refs + excluded.refs
            RETURNING fr.digest, old.refs AS before, new.refs AS after
        ), flips AS (
            SELECT b.size,
                   (m.after > 0)::int - (coalesce(m.before, 0) > 0)::int AS dblobs,
                   (m.after = 0)::int - (coalesce(m.before = 0, false))::int AS drecl
            FROM moved m JOIN blobs b ON b.digest = m.digest
        ), own AS (
            SELECT coalesce(sum(images), 0) AS images, coalesce(sum(compressed), 0) AS compressed,
                   coalesce(sum(logical), 0) AS logical
            FROM stats_totals WHERE scope_key = 'registry:' || r
        )
        INSERT INTO stats_totals AS t
            (scope_key, images, compressed, logical, blobs, stored, reclaimable_blobs, reclaimable_bytes)
        SELECT 'folder:' || target, sign * own.images, sign * own.compressed, sign * own.logical,
               coalesce((SELECT sum(dblobs) FROM flips), 0),
               coalesce((SELECT sum(dblobs * size) FROM flips), 0),
               coalesce((SELECT sum(drecl) FROM flips), 0),
               coalesce((SELECT sum(drecl * size) FROM flips), 0)
        FROM own
        ON CONFLICT (scope_key) DO UPDATE SET
            images = t.images + excluded.images,
            compressed = t.compressed + excluded.compressed,
            logical = t.logical + excluded.logical,
            blobs = t.blobs + excluded.blobs,
            stored = t.stored + excluded.stored,
            reclaimable_blobs = t.reclaimable_blobs + excluded.reclaimable_blobs,
            reclaimable_bytes = t.reclaimable_bytes + excluded.reclaimable_bytes;
        -- r's lone digests: one blob each for the folder
        INSERT INTO stats_totals AS t (scope_key, blobs, stored)
        SELECT 'folder:' || target, sign * count(*), sign * coalesce(sum(l.size), 0)
        FROM stats_lone_digests l JOIN stats_repositories p ON p.id = l.repository_id
        WHERE split_part(p.name, '/', 1) = r
        ON CONFLICT (scope_key) DO UPDATE SET
            blobs = t.blobs + excluded.blobs, stored = t.stored + excluded.stored;
    END LOOP;
    INSERT INTO stats_registry_folders (registry_id, folder_id) VALUES (r, f)
    ON CONFLICT (registry_id) DO UPDATE SET folder_id = excluded.folder_id;
END
$$;

-- Fold every change this transaction sees into the aggregates, delete them from
-- the log, and record up to where the figures are exact; returns how many log
-- rows were folded. The caller holds the folder lock (one folder at a time) and
-- runs under REPEATABLE READ, so the batch, the outbox mark and the aggregates
-- are one snapshot: the figures are then exactly those of the index as of that
-- snapshot. Sums commute and each count's before/after comes from its locked
-- row, so whatever order batches come in, once everything is folded every
-- figure is that of the final counts.
CREATE OR REPLACE FUNCTION stats_fold() RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    folded bigint := 0;
BEGIN
    -- an empty log (an idle mirror folds every second) touches no table, not even
    -- the batch's temporary one: its TRUNCATE rewrites a catalog row each time
    IF EXISTS (SELECT FROM stats_changes) THEN
        IF to_regclass('pg_temp.stats_batch') IS NULL THEN
            CREATE TEMP TABLE stats_batch (LIKE stats_changes) ON COMMIT DELETE ROWS;
        END IF;
        TRUNCATE stats_batch;
        WITH claimed AS (DELETE FROM stats_changes RETURNING *)
        INSERT INTO stats_batch SELECT * FROM claimed;
        GET DIAGNOSTICS folded = ROW_COUNT;
    END IF;

    IF folded > 0 THEN
        -- the planner's row counts for the batch (a fresh temporary table has none:
        -- it took 157,000 unnested rows for 3,000 and sorted instead of hashing)
        ANALYZE stats_batch;
        -- 0. a number for each repository name the batch brings first (only new names
        --    draw one: an ON CONFLICT alone would draw one for every name, every batch)
        INSERT INTO stats_repositories (name)
        SELECT DISTINCT b.name FROM stats_batch b
        WHERE b.name IS NOT NULL
          AND NOT EXISTS (SELECT FROM stats_repositories p WHERE p.name = b.name)
        ORDER BY 1;
        -- 1a. images folded before: their blob rows and lineage key (from the batch
        --    when it brings all of an image's references at once, else read again
        --    from the image's row); images new in the batch are written whole below
        --    The lookup of each image's row is a scalar subquery, one index probe an
        --    image: as a join, a big batch had stats_images read whole (at 1,000,000
        --    images, a scan of all its rows a batch, for a first mirror's images, none
        --    of which is there yet).
        WITH per AS MATERIALIZED (
            SELECT image_id, sum(delta * cardinality(digests)) AS n, count(*) AS parts,
                   bool_and(delta > 0) AS only_added, min(id) AS first_id,
                   (SELECT s.blob_rows FROM stats_images s WHERE s.image_id = x.image_id)
                       AS rows_before
            FROM stats_batch x WHERE digests IS NOT NULL GROUP BY image_id
        ),
        touched AS (
            SELECT p.image_id, p.n, p.parts, p.only_added, b.digests, b.config, p.rows_before
            FROM per p
            JOIN stats_batch b ON b.id = p.first_id
            WHERE p.rows_before IS NOT NULL  -- folded before
        ),
        k AS (
            SELECT t.image_id, t.n,
                   CASE WHEN t.rows_before = 0 AND t.only_added AND t.parts = 1 THEN
                            stats_layer_count(t.digests, t.config)
                        WHEN t.rows_before + t.n <= 0 THEN 0
                        ELSE coalesce((SELECT stats_layer_count(i.blob_digests, i.blob_config)
                                       FROM images i WHERE i.id = t.image_id), 0)
                   END AS layers,
                   CASE WHEN t.rows_before = 0 AND t.only_added AND t.parts = 1 THEN
                            stats_chain(t.digests, t.config)
                        WHEN t.rows_before + t.n <= 0 THEN ''::bytea
                        ELSE coalesce((SELECT stats_chain(i.blob_digests, i.blob_config)
                                       FROM images i WHERE i.id = t.image_id), ''::bytea)
                   END AS chain
            FROM touched t
        )
        UPDATE stats_images s
        SET blob_rows = s.blob_rows + k.n, layer_count = k.layers, chain = k.chain
        FROM k
        WHERE s.image_id = k.image_id;

        -- 1b. images added: their repository and registry (for the lookups below), blob
        -- rows and lineage key, in one write (most come with all their references,
        -- in their own 'i' row of the batch)
        WITH b AS (
            SELECT image_id, sum(delta * cardinality(digests)) AS n, count(*) AS parts,
                   bool_and(delta > 0) AS only_added, min(id) AS first_id
            FROM stats_batch WHERE digests IS NOT NULL GROUP BY image_id
        ),
        added AS (
            SELECT DISTINCT ON (image_id) image_id, name, registry_id FROM stats_batch
            WHERE kind = 'i' AND delta > 0
            ORDER BY image_id
        )
        INSERT INTO stats_images (image_id, repository_id, blob_rows, layer_count, chain)
        SELECT a.image_id, (SELECT p.id FROM stats_repositories p WHERE p.name = a.name),
               coalesce(b.n, 0),
               CASE WHEN f.id IS NOT NULL THEN stats_layer_count(f.digests, f.config)
                    WHEN coalesce(b.n, 0) <= 0 THEN 0
                    ELSE coalesce((SELECT stats_layer_count(i.blob_digests, i.blob_config)
                                   FROM images i WHERE i.id = a.image_id), 0)
               END,
               -- stats_chain written out: a subquery runs in this statement's plan, where
               -- a call of the function (not inlinable) cost ~10 µs an image
               CASE WHEN f.id IS NOT NULL THEN
                        coalesce((SELECT string_agg(stats_chain_part(u.d), ''::bytea ORDER BY u.o)
                                  FROM unnest(f.digests[1 + f.config::int : 256 + f.config::int])
                                       WITH ORDINALITY AS u(d, o)), ''::bytea)
                    WHEN coalesce(b.n, 0) <= 0 THEN ''::bytea
                    ELSE coalesce((SELECT stats_chain(i.blob_digests, i.blob_config)
                                   FROM images i WHERE i.id = a.image_id), ''::bytea)
               END
        FROM added a
        LEFT JOIN b ON b.image_id = a.image_id
        LEFT JOIN stats_batch f ON f.id = b.first_id AND b.parts = 1 AND b.only_added
        ORDER BY a.image_id
        ON CONFLICT (image_id) DO NOTHING;

        -- 2. images and compressed bytes per scope (folders as known before this batch)
        INSERT INTO stats_totals AS t (scope_key, images, compressed)
        SELECT v.k, sum(g.n), sum(g.c)
        FROM (SELECT registry_id, name, sum(delta) AS n, sum(compressed) AS c
              FROM stats_batch WHERE kind = 'i' GROUP BY registry_id, name) g
        LEFT JOIN stats_registry_folders m ON m.registry_id = g.registry_id
        CROSS JOIN LATERAL (VALUES ('all'), ('registry:' || g.registry_id),
                                   ('repository:' || g.name), ('folder:' || m.folder_id)) v(k)
        WHERE v.k IS NOT NULL
        GROUP BY v.k ORDER BY v.k
        ON CONFLICT (scope_key) DO UPDATE SET
            images = t.images + excluded.images, compressed = t.compressed + excluded.compressed;

        -- 3a. lone digests the batch changes again get their per-scope rows first
        --     (count 1 in their scopes: the totals count them already)
        WITH promoted AS (
            DELETE FROM stats_lone_digests l
            WHERE l.digest = ANY (ARRAY(SELECT DISTINCT u.digest
                                        FROM stats_batch b CROSS JOIN LATERAL unnest(b.digests) AS u(digest)
                                        WHERE b.digests IS NOT NULL))
            RETURNING l.digest, l.repository_id,
                      (SELECT split_part(p.name, '/', 1) FROM stats_repositories p
                       WHERE p.id = l.repository_id) AS registry_id
        ),
        reg AS (
            INSERT INTO stats_registry_refs (registry_id, digest, refs)
            SELECT registry_id, digest, 1 FROM promoted ORDER BY registry_id, digest
        ),
        fol AS (
            INSERT INTO stats_folder_refs (folder_id, digest, refs)
            SELECT m.folder_id, p.digest, 1
            FROM promoted p JOIN stats_registry_folders m ON m.registry_id = p.registry_id
            ORDER BY m.folder_id, p.digest
        )
        INSERT INTO stats_repository_refs (digest, repository_id, refs)
        SELECT digest, repository_id, 1 FROM promoted ORDER BY digest, repository_id;

        -- 3b. per-scope digest counts, and what their crossings of zero move
        WITH r AS (
            -- every log row names its image's repository (immutable upstream); a row
            -- an older writer left without one is looked up (stats_images has it)
            SELECT b.registry_id, b.delta, u.digest, u.size,
                   coalesce(b.name, (SELECT p.name FROM stats_images s
                                     JOIN stats_repositories p ON p.id = s.repository_id
                                     WHERE s.image_id = b.image_id)) AS name
            FROM stats_batch b CROSS JOIN LATERAL unnest(b.digests, b.sizes) AS u(digest, size)
            WHERE b.digests IS NOT NULL
        ),
        -- per digest first (a bytea key): most of a batch's digests are new lone ones,
        -- which then skip the per-scope grouping
        d AS (
            SELECT digest, count(*) AS rows, bool_and(delta > 0) AS only_added,
                   any_value(registry_id) AS registry_id, any_value(name) AS repository,
                   max(size) AS size
            FROM r WHERE name IS NOT NULL GROUP BY digest
        ),
        -- new lone digests: one row added by the batch, nothing else, never counted
        lone AS (
            SELECT d.digest, d.registry_id, d.repository, d.size FROM d
            WHERE d.rows = 1 AND d.only_added
              AND NOT EXISTS (SELECT 1 FROM stats_repository_refs p WHERE p.digest = d.digest)
        ),
        new_lone AS (
            INSERT INTO stats_lone_digests (digest, repository_id, size)
            SELECT l.digest, p.id, l.size
            FROM lone l JOIN stats_repositories p ON p.name = l.repository
            ORDER BY l.digest
        ),
        g AS (
            SELECT r.registry_id, r.name AS repository, r.digest,
                   sum(r.delta) AS n, bool_or(r.delta > 0) AS added, max(r.size) AS size
            FROM r
            WHERE r.name IS NOT NULL AND r.digest NOT IN (SELECT digest FROM lone)
            GROUP BY r.registry_id, r.name, r.digest
        ),
        -- a count is written when it moves, or when the digest was added (and
        -- removed again) in the batch: the row then says "referenced once"
        reg AS (
            INSERT INTO stats_registry_refs AS t (registry_id, digest, refs)
            SELECT registry_id, digest, sum(n) FROM g GROUP BY registry_id, digest
            HAVING sum(n) <> 0 OR bool_or(added) ORDER BY registry_id, digest
            ON CONFLICT (registry_id, digest) DO UPDATE SET refs = t.refs + excluded.refs
            RETURNING 'registry:' || t.registry_id AS k, t.digest, old.refs AS before, new.refs AS after
        ),
        rep AS (
            INSERT INTO stats_repository_refs AS t (digest, repository_id, refs)
            SELECT g.digest, p.id, g.n
            FROM g JOIN stats_repositories p ON p.name = g.repository
            WHERE g.n <> 0 OR g.added ORDER BY g.digest, p.id
            ON CONFLICT (digest, repository_id) DO UPDATE SET refs = t.refs + excluded.refs
            RETURNING (SELECT 'repository:' || p.name FROM stats_repositories p
                       WHERE p.id = t.repository_id) AS k,
                      t.digest, old.refs AS before, new.refs AS after
        ),
        fol AS (
            INSERT INTO stats_folder_refs AS t (folder_id, digest, refs)
            SELECT m.folder_id, g.digest, sum(g.n)
            FROM g JOIN stats_registry_folders m ON m.registry_id = g.registry_id
            GROUP BY m.folder_id, g.digest HAVING sum(g.n) <> 0 OR bool_or(g.added)
            ORDER BY m.folder_id, g.digest
            ON CONFLICT (folder_id, digest) DO UPDATE SET refs = t.refs + excluded.refs
            RETURNING 'folder:' || t.folder_id AS k, t.digest, old.refs AS before, new.refs AS after
        ),
        -- the whole index: a digest's count is the sum of its repository rows (read
        -- here before this statement's upserts: one snapshot)
        whole AS MATERIALIZED (
            SELECT d.digest, d.size, d.n, d.written,
                   (SELECT sum(p.refs) FROM stats_repository_refs p WHERE p.digest = d.digest) AS before
            FROM (SELECT digest, sum(n) AS n, bool_or(n <> 0 OR added) AS written, max(size) AS size
                  FROM g GROUP BY digest) d
        ),
        sizes AS (SELECT digest, max(size) AS size FROM g GROUP BY digest),
        flip AS (
            SELECT f.k, s.size,
                   (f.after > 0)::int - (coalesce(f.before, 0) > 0)::int AS dblobs,
                   (f.after = 0)::int - (coalesce(f.before = 0, false))::int AS drecl
            FROM (SELECT * FROM reg UNION ALL SELECT * FROM rep UNION ALL SELECT * FROM fol) f
            JOIN sizes s ON s.digest = f.digest
            UNION ALL
            SELECT 'all', w.size,
                   (coalesce(w.before, 0) + w.n > 0)::int - (coalesce(w.before, 0) > 0)::int,
                   ((w.before IS NOT NULL OR w.written) AND coalesce(w.before, 0) + w.n = 0)::int
                       - (coalesce(w.before = 0, false))::int
            FROM whole w
        ),
        flips AS (
            SELECT k, dblobs, dblobs * size AS stored, drecl, drecl * size AS rbytes
            FROM flip WHERE dblobs <> 0 OR drecl <> 0
            UNION ALL
            -- new lone digests: one more blob each for each of their scopes (summed per
            -- repository first: most of a batch's digests are new lone ones)
            SELECT v.k, l.n, l.size, 0, 0
            FROM (SELECT registry_id, repository, count(*) AS n, sum(size) AS size
                  FROM lone GROUP BY registry_id, repository) l
            LEFT JOIN stats_registry_folders m ON m.registry_id = l.registry_id
            CROSS JOIN LATERAL (VALUES ('all'), ('registry:' || l.registry_id),
                                       ('repository:' || l.repository), ('folder:' || m.folder_id)) v(k)
            WHERE v.k IS NOT NULL
        ),
        logical AS (
            SELECT v.k, sum(x.logical) AS logical
            FROM (SELECT registry_id, name AS repository, sum(delta * size) AS logical
                  FROM r WHERE name IS NOT NULL GROUP BY registry_id, name) x
            LEFT JOIN stats_registry_folders m ON m.registry_id = x.registry_id
            CROSS JOIN LATERAL (VALUES ('all'), ('registry:' || x.registry_id),
                                       ('repository:' || x.repository), ('folder:' || m.folder_id)) v(k)
            WHERE v.k IS NOT NULL
            GROUP BY v.k
        )
        INSERT INTO stats_totals AS t
            (scope_key, logical, blobs, stored, reclaimable_blobs, reclaimable_bytes)
        SELECT k, sum(logical), sum(dblobs), sum(stored), sum(drecl), sum(rbytes)
        FROM (SELECT k, logical, 0 AS dblobs, 0 AS stored, 0 AS drecl, 0 AS rbytes FROM logical
              UNION ALL
              SELECT k, 0, dblobs, stored, drecl, rbytes FROM flips) u
        GROUP BY k ORDER BY k
        ON CONFLICT (scope_key) DO UPDATE SET
            logical = t.logical + excluded.logical,
            blobs = t.blobs + excluded.blobs,
            stored = t.stored + excluded.stored,
            reclaimable_blobs = t.reclaimable_blobs + excluded.reclaimable_blobs,
            reclaimable_bytes = t.reclaimable_bytes + excluded.reclaimable_bytes;

        -- 5. images gone: an image that existed before the batch has a removal as
        --    its first change in it (ids follow each image's history)
        DELETE FROM stats_images s
        USING (SELECT image_id, sum(delta) AS net,
                      ((array_agg(delta ORDER BY id) FILTER (WHERE delta <> 0))[1] < 0)::int AS existed
               FROM stats_batch WHERE kind = 'i' GROUP BY image_id) x
        WHERE s.image_id = x.image_id AND x.existed + x.net <= 0;

        -- 6. registries' folders learned in the batch (the last word of each)
        PERFORM stats_learn_folder(x.registry_id, x.folder_id)
        FROM (SELECT DISTINCT ON (registry_id) registry_id, folder_id FROM stats_batch
              WHERE folder_id IS NOT NULL AND kind IN ('i', 'r')
              ORDER BY registry_id, id DESC) x
        ORDER BY x.registry_id;
    END IF;

    -- an idle pass writes nothing (an unchanged re-sync writes nothing at all);
    -- events that changed no figure (a re-tag) still move the mark
    UPDATE stats_folded f
    SET event_id = greatest(f.event_id, o.last), folded_at = now(), batches = f.batches + 1
    FROM (SELECT coalesce(max(id), 0) AS last FROM outbox) o
    WHERE folded > 0 OR o.last > f.event_id;
    RETURN folded;
END
$fn$;


-- == Recomputing (repair, migration backfill, TRUNCATE) =========================

-- Recompute every aggregate from images (their blob arrays) and registries. With
-- keep_history, a (scope, digest) count that existed stays (at 0 if nothing
-- references the digest now): what scopes referenced once is kept; without
-- it (a TRUNCATE) the history starts again from what is left.
CREATE OR REPLACE FUNCTION stats_recompute(keep_history boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7883958458510344197);   -- the folder's lock ("mirror" + 5)
    DELETE FROM stats_changes;
    DELETE FROM stats_images;
    DELETE FROM stats_totals;
    DELETE FROM stats_lone_digests;
    IF keep_history THEN
        UPDATE stats_registry_refs SET refs = 0 WHERE refs <> 0;
        UPDATE stats_folder_refs SET refs = 0 WHERE refs <> 0;
        UPDATE stats_repository_refs SET refs = 0 WHERE refs <> 0;
    ELSE
        DELETE FROM stats_registry_refs;
        DELETE FROM stats_folder_refs;
        DELETE FROM stats_repository_refs;
    END IF;

    -- what was learned of registries' folders stays (images that told it may be gone)
    INSERT INTO stats_registry_folders AS m (registry_id, folder_id)
    SELECT DISTINCT ON (1) split_part(name, '/', 1), folder_id FROM images
    WHERE folder_id IS NOT NULL
    ORDER BY 1, folder_id
    ON CONFLICT (registry_id) DO NOTHING;
    INSERT INTO stats_registry_folders AS m (registry_id, folder_id)
    SELECT registry_id, folder_id FROM registries ORDER BY registry_id
    ON CONFLICT (registry_id) DO UPDATE SET folder_id = excluded.folder_id;

    -- (images.name sorts by "C", stats_repositories.name by the database's collation)
    INSERT INTO stats_repositories (name)
    SELECT DISTINCT i.name COLLATE "default" FROM images i
    WHERE NOT EXISTS (SELECT FROM stats_repositories p WHERE p.name = i.name COLLATE "default")
    ORDER BY 1;
    INSERT INTO stats_images (image_id, repository_id, blob_rows, layer_count, chain)
    SELECT i.id, p.id, cardinality(i.blob_digests),
           stats_layer_count(i.blob_digests, i.blob_config), stats_chain(i.blob_digests, i.blob_config)
    FROM images i JOIN stats_repositories p ON p.name = i.name COLLATE "default";

    -- every blob reference of the index, once
    DROP TABLE IF EXISTS pg_temp.stats_recompute_refs;
    CREATE TEMP TABLE stats_recompute_refs AS
    SELECT u.digest, split_part(i.name, '/', 1)::text AS registry_id, i.name::text AS repository,
           u.size
    FROM images i CROSS JOIN LATERAL unnest(i.blob_digests, i.blob_sizes) AS u(digest, size);

    INSERT INTO stats_registry_refs AS t (registry_id, digest, refs)
    SELECT registry_id, digest, count(*) FROM stats_recompute_refs GROUP BY 1, 2
    ON CONFLICT (registry_id, digest) DO UPDATE SET refs = excluded.refs;
    INSERT INTO stats_repository_refs AS t (digest, repository_id, refs)
    SELECT r.digest, p.id, count(*)
    FROM stats_recompute_refs r JOIN stats_repositories p ON p.name = r.repository
    GROUP BY 1, 2
    ON CONFLICT (digest, repository_id) DO UPDATE SET refs = excluded.refs;
    INSERT INTO stats_folder_refs AS t (folder_id, digest, refs)
    SELECT m.folder_id, r.digest, sum(r.refs)
    FROM stats_registry_refs r JOIN stats_registry_folders m ON m.registry_id = r.registry_id
    GROUP BY 1, 2
    ON CONFLICT (folder_id, digest) DO UPDATE SET refs = excluded.refs;

    -- a digest with one count of 1, in one repository, and no other row: lone
    WITH single AS (
        SELECT digest FROM stats_repository_refs
        GROUP BY digest HAVING count(*) = 1 AND min(refs) = 1
    ),
    moved AS (
        DELETE FROM stats_repository_refs p USING single s WHERE p.digest = s.digest
        RETURNING p.digest, p.repository_id
    )
    INSERT INTO stats_lone_digests (digest, repository_id, size)
    SELECT m.digest, m.repository_id, r.size
    FROM moved m
    JOIN (SELECT digest, max(size) AS size FROM stats_recompute_refs GROUP BY digest) r
      ON r.digest = m.digest;
    DELETE FROM stats_registry_refs r USING stats_lone_digests l WHERE r.digest = l.digest;
    DELETE FROM stats_folder_refs f USING stats_lone_digests l WHERE f.digest = l.digest;

    INSERT INTO stats_totals (scope_key, images, compressed, logical)
    SELECT v.k, sum(x.n), sum(x.c), sum(x.l)
    FROM (SELECT split_part(i.name, '/', 1) AS registry_id, i.name, count(*) AS n,
                 sum(i.compressed_size) AS c,
                 sum((SELECT coalesce(sum(s), 0) FROM unnest(i.blob_sizes) AS s)) AS l
          FROM images i
          GROUP BY 1, 2) x
    LEFT JOIN stats_registry_folders m ON m.registry_id = x.registry_id
    CROSS JOIN LATERAL (VALUES ('all'), ('registry:' || x.registry_id),
                               ('repository:' || x.name), ('folder:' || m.folder_id)) v(k)
    WHERE v.k IS NOT NULL
    GROUP BY v.k;

    INSERT INTO stats_totals AS t (scope_key, blobs, stored, reclaimable_blobs, reclaimable_bytes)
    SELECT x.k, count(*) FILTER (WHERE x.refs > 0), coalesce(sum(x.size) FILTER (WHERE x.refs > 0), 0),
           count(*) FILTER (WHERE x.refs = 0), coalesce(sum(x.size) FILTER (WHERE x.refs = 0), 0)
    FROM (SELECT y.k, y.refs, b.size
          FROM (SELECT 'registry:' || registry_id AS k, digest, refs FROM stats_registry_refs
                UNION ALL
                SELECT 'folder:' || folder_id, digest, refs FROM stats_folder_refs
                UNION ALL
                SELECT 'repository:' || p.name, r.digest, r.refs
                FROM stats_repository_refs r JOIN stats_repositories p ON p.id = r.repository_id
                UNION ALL
                SELECT 'all', digest, sum(refs) FROM stats_repository_refs GROUP BY digest) y
          JOIN blobs b ON b.digest = y.digest
          UNION ALL
          SELECT v.k, 1, l.size
          FROM (SELECT split_part(p.name, '/', 1) AS registry_id, p.name AS repository, l.size
                FROM stats_lone_digests l JOIN stats_repositories p ON p.id = l.repository_id) l
          LEFT JOIN stats_registry_folders m ON m.registry_id = l.registry_id
          CROSS JOIN LATERAL (VALUES ('all'), ('registry:' || l.registry_id),
                                     ('repository:' || l.repository), ('folder:' || m.folder_id)) v(k)
          WHERE v.k IS NOT NULL) x
    GROUP BY x.k
    ON CONFLICT (scope_key) DO UPDATE SET
        blobs = excluded.blobs, stored = excluded.stored,
        reclaimable_blobs = excluded.reclaimable_blobs, reclaimable_bytes = excluded.reclaimable_bytes;

    DROP TABLE stats_recompute_refs;

    UPDATE stats_folded
    SET event_id = greatest(event_id, coalesce((SELECT max(id) FROM outbox), 0)),
        folded_at = now(), rebuild_pending = false;
END
$$;

-- The repair: fold what is pending (its history counts), then recompute from
-- the index. Blocks writers while it runs.
CREATE OR REPLACE FUNCTION stats_rebuild() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE images, blobs, registries IN SHARE MODE;
    PERFORM pg_advisory_xact_lock(7883958458510344197);
    PERFORM stats_fold();
    PERFORM stats_recompute(true);
END
$$;

-- Once, after sql/080 on an index the in-transaction triggers kept, after sql/091
-- (blob arrays, binary digests), or on a new index.
SELECT stats_rebuild() FROM stats_folded WHERE rebuild_pending;
