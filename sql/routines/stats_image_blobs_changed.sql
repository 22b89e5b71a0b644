-- The statement-level trigger function on image_blobs that keeps the dedup
-- aggregates (docs/STATS.md "How the figures stay cheap"). Created by
-- sql/040_stats.sql, revised by 041-043; its current body lives here and is
-- re-applied whenever this file changes (mirror/store/migrate.py: routines).
--
-- Since 043: every lookup stays one index probe per key whatever the planner's
-- estimates (the OFFSET 0 fence: the planner had flattened the per-digest
-- lookup of image_blobs into a hash join over a scan of the whole table, so each
-- page of a first mirror read all of image_blobs); a digest the statement itself
-- creates cancels out before any repository name is looked up (it used to cost
-- a lookup per row, to sum to zero); the "no per-scope rows yet" tests run once
-- per digest instead of once per row. At 100,000 images the trigger's share of
-- a first-mirror page went from ~170 ms to ~110 ms.

CREATE OR REPLACE FUNCTION stats_image_blobs_changed() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    changed text;
BEGIN
    changed := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT *, 1 AS sign FROM new_rows'
        WHEN 'DELETE' THEN 'SELECT *, -1 AS sign FROM old_rows'
        ELSE 'SELECT *, 1 AS sign FROM new_rows UNION ALL SELECT *, -1 AS sign FROM old_rows'
    END;
    EXECUTE format($q$
        SELECT stats_lock_registries(ARRAY(SELECT DISTINCT registry_id FROM (%1$s) c))
    $q$, changed);
    -- Digests without per-scope rows yet ("bare"): a digest carried by one image
    -- only, ever, needs none (its scopes are that image's). When a statement adds
    -- another image to one, or removes its rows, first write down the per-scope
    -- counts it had before the statement (image_blobs now, minus the added rows,
    -- plus the removed ones). Writers hold the digests' blobs rows until commit
    -- (the ingest updates them in the very statement that writes image_blobs; the
    -- lock below takes the others), so no concurrent statement sees a bare digest
    -- this one is giving a second row.
    -- Lock order blobs -> per-scope rows, as the ingest's merge has it: lock the
    -- blobs rows this transaction has not written yet (a delete reaches image_blobs
    -- before blobs), in digest order.
    EXECUTE format($q$
    SELECT count(*) FROM (
        SELECT b.digest FROM blobs b
        WHERE b.digest IN (SELECT c.digest FROM (%1$s) c)
          AND b.xmin::text::bigint <> pg_current_xact_id()::text::bigint %% 4294967296
        ORDER BY b.digest
        FOR NO KEY UPDATE OF b
    ) x
    $q$, changed);
    EXECUTE format($q$
    WITH c AS (%1$s),
    bare AS (
        SELECT d.digest FROM (SELECT DISTINCT c.digest FROM c) d
        WHERE NOT EXISTS (SELECT 1 FROM stats_repository_refs r WHERE r.digest = d.digest)
    ),
    -- per image: rows now, minus the statement's additions, plus its removals; a
    -- digest new in this statement cancels out here, before any name lookup
    before AS (
        SELECT u.digest, u.image_id, u.registry_id, sum(u.n) AS n
        FROM (
            SELECT b.digest, b.image_id, b.registry_id, 1 AS n
            FROM bare x CROSS JOIN LATERAL (
                -- OFFSET 0 keeps this a lookup per digest (image_blobs_digest)
                SELECT b.digest, b.image_id, b.registry_id FROM image_blobs b
                WHERE b.digest = x.digest
                OFFSET 0
            ) b
            UNION ALL
            SELECT c.digest, c.image_id, c.registry_id, -c.sign
            FROM c JOIN bare x ON x.digest = c.digest
        ) u
        GROUP BY u.digest, u.image_id, u.registry_id
        HAVING sum(u.n) <> 0
    ),
    names AS (
        SELECT y.image_id, (SELECT s.name FROM stats_images s WHERE s.image_id = y.image_id) AS name
        FROM (SELECT DISTINCT image_id FROM before) y
    ),
    per AS (
        SELECT x.digest, s.name, x.registry_id, sum(x.n) AS n
        FROM before x JOIN names s ON s.image_id = x.image_id
        WHERE s.name IS NOT NULL
        GROUP BY x.digest, s.name, x.registry_id HAVING sum(x.n) <> 0
    ),
    reg AS (
        INSERT INTO stats_registry_refs (registry_id, digest, refs)
        SELECT registry_id, digest, sum(n) FROM per GROUP BY registry_id, digest ORDER BY 1, 2
        ON CONFLICT (registry_id, digest) DO NOTHING
    ),
    fol AS (
        INSERT INTO stats_folder_refs (folder_id, digest, refs)
        SELECT m.folder_id, p.digest, sum(p.n)
        FROM per p JOIN stats_registry_folders m ON m.registry_id = p.registry_id
        GROUP BY m.folder_id, p.digest ORDER BY 1, 2
        ON CONFLICT (folder_id, digest) DO NOTHING
    )
    INSERT INTO stats_repository_refs (digest, repository, refs)
    SELECT digest, name, n FROM per ORDER BY digest, name
    ON CONFLICT (digest, repository) DO NOTHING
    $q$, changed);
    EXECUTE format($q$
    WITH c AS (%1$s),
    names AS (
        -- one index lookup per image (a join could scan all of stats_images)
        SELECT x.image_id, (SELECT s.name FROM stats_images s WHERE s.image_id = x.image_id) AS name
        FROM (SELECT DISTINCT image_id FROM c) x
    ),
    g0 AS (
        SELECT c.registry_id, s.name AS repository, c.digest,
               sum(c.sign) AS n, max(c.size) AS size, sum(c.sign * c.size) AS logical
        FROM c JOIN names s ON s.image_id = c.image_id
        WHERE s.name IS NOT NULL
        GROUP BY c.registry_id, s.name, c.digest
    ),
    -- still bare after the step above: one row added, by one image, none before
    implicit AS (
        SELECT d.digest
        FROM (SELECT c.digest FROM c GROUP BY c.digest
              HAVING bool_and(c.sign = 1) AND count(*) = 1) d
        WHERE NOT EXISTS (SELECT 1 FROM stats_repository_refs r WHERE r.digest = d.digest)
    ),
    g AS (SELECT * FROM g0 WHERE digest NOT IN (SELECT digest FROM implicit)),
    lone AS (
        -- an implicit digest enters its image's scopes: one more blob each
        SELECT g0.registry_id, g0.repository, g0.size FROM g0 JOIN implicit USING (digest)
    ),
    reg AS (
        INSERT INTO stats_registry_refs AS t (registry_id, digest, refs)
        SELECT registry_id, digest, sum(n) FROM g GROUP BY registry_id, digest
        HAVING sum(n) <> 0 ORDER BY registry_id, digest
        ON CONFLICT (registry_id, digest) DO UPDATE SET refs = t.refs + excluded.refs
        RETURNING 'registry:' || t.registry_id AS k, t.digest, old.refs AS before, new.refs AS after
    ),
    rep AS (
        INSERT INTO stats_repository_refs AS t (digest, repository, refs)
        SELECT digest, repository, n FROM g WHERE n <> 0 ORDER BY digest, repository
        ON CONFLICT (digest, repository) DO UPDATE SET refs = t.refs + excluded.refs
        RETURNING 'repository:' || t.repository AS k, t.digest, old.refs AS before, new.refs AS after
    ),
    fol AS (
        INSERT INTO stats_folder_refs AS t (folder_id, digest, refs)
        SELECT m.folder_id, g.digest, sum(g.n)
        FROM g JOIN stats_registry_folders m ON m.registry_id = g.registry_id
        GROUP BY m.folder_id, g.digest HAVING sum(g.n) <> 0 ORDER BY m.folder_id, g.digest
        ON CONFLICT (folder_id, digest) DO UPDATE SET refs = t.refs + excluded.refs
        RETURNING 'folder:' || t.folder_id AS k, t.digest, old.refs AS before, new.refs AS after
    ),
    sizes AS (SELECT digest, max(size) AS size FROM g GROUP BY digest),
    flips AS (
        SELECT f.k, s.size,
               (f.after > 0)::int - (coalesce(f.before, 0) > 0)::int AS dblobs,
               (f.after = 0)::int - (coalesce(f.before = 0, false))::int AS drecl
        FROM (SELECT * FROM reg UNION ALL SELECT * FROM rep UNION ALL SELECT * FROM fol) f
        JOIN sizes s ON s.digest = f.digest
    ),
    logical AS (
        SELECT v.k, sum(x.logical) AS logical, v.scoped * sum(x.lone_blobs) AS lone_blobs,
               v.scoped * sum(x.lone_bytes) AS lone_bytes
        FROM (SELECT registry_id, repository, sum(logical) AS logical,
                     0 AS lone_blobs, 0 AS lone_bytes
              FROM g0 GROUP BY registry_id, repository
              UNION ALL
              SELECT registry_id, repository, 0, count(*), sum(size)
              FROM lone GROUP BY registry_id, repository) x
        LEFT JOIN stats_registry_folders m ON m.registry_id = x.registry_id
        CROSS JOIN LATERAL (VALUES ('all', 0), ('registry:' || x.registry_id, 1),
                                   ('repository:' || x.repository, 1),
                                   ('folder:' || m.folder_id, 1)) v(k, scoped)
        WHERE v.k IS NOT NULL
        GROUP BY v.k, v.scoped
    )
    INSERT INTO stats_totals_pending
        (scope_key, logical, blobs, stored, reclaimable_blobs, reclaimable_bytes)
    SELECT k, sum(logical), sum(dblobs), sum(stored), sum(drecl), sum(drecl * size)
    FROM (SELECT k, logical, lone_blobs AS dblobs, lone_bytes AS stored, 0 AS drecl, 0 AS size
          FROM logical
          UNION ALL
          SELECT k, 0, dblobs, dblobs * size, drecl, size FROM flips
          WHERE dblobs <> 0 OR drecl <> 0) u
    GROUP BY k
    $q$, changed);
    IF TG_OP = 'DELETE' THEN
        -- the image itself is gone (cascade): its row served the repository name above
        DELETE FROM stats_images s
        WHERE s.image_id = ANY (ARRAY(SELECT DISTINCT image_id FROM old_rows))
          AND NOT EXISTS (SELECT 1 FROM images i WHERE i.id = s.image_id);
    END IF;
    -- the lineage key and blob count of each touched image
    EXECUTE format($q$
    WITH c AS (%1$s),
    touched AS (
        SELECT x.*, s.blob_rows AS rows_before
        FROM (SELECT image_id, sum(sign) AS n, bool_and(sign = 1) AS only_added,
                     count(*) FILTER (WHERE kind = 'l' AND sign = 1) AS layers,
                     substring(coalesce(string_agg(stats_chain_part(digest), ''::bytea
                                                   ORDER BY position)
                                            FILTER (WHERE kind = 'l' AND sign = 1), ''::bytea)
                               FROM 1 FOR 2048) AS chain
              FROM c GROUP BY image_id) x
        CROSS JOIN LATERAL (SELECT s.blob_rows FROM stats_images s WHERE s.image_id = x.image_id) s
    ),
    k AS (
        SELECT t.image_id, t.n,
               CASE WHEN t.rows_before = 0 AND t.only_added THEN t.layers  -- all its rows, now
                    WHEN t.rows_before + t.n <= 0 THEN 0                    -- none left
                    ELSE (SELECT count(*) FROM image_blobs b
                          WHERE b.image_id = t.image_id AND b.kind = 'l')
               END AS layers,
               CASE WHEN t.rows_before = 0 AND t.only_added THEN t.chain
                    WHEN t.rows_before + t.n <= 0 THEN ''::bytea
                    ELSE substring(coalesce((SELECT string_agg(stats_chain_part(b.digest), ''::bytea
                                                               ORDER BY b.position)
                                             FROM image_blobs b
                                             WHERE b.image_id = t.image_id AND b.kind = 'l'),
                                            ''::bytea) FROM 1 FOR 2048)
               END AS chain
        FROM touched t
    )
    UPDATE stats_images s
    SET blob_rows = s.blob_rows + k.n, layer_count = k.layers, chain = k.chain
    FROM k
    WHERE s.image_id = k.image_id
    $q$, changed);
    PERFORM stats_fold_pending();
    RETURN NULL;
END
$fn$;
