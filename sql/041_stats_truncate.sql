-- Brings databases that applied an earlier sql/040_stats.sql to the current
-- function bodies (the lineage key from the statement's rows; a cheaper delete
-- path; a rebuild that keeps learned registry folders), and keeps the stats
-- right when a table is TRUNCATEd (no row triggers fire then): recompute.

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
    EXECUTE format($q$
    WITH c AS (%1$s),
    g AS (
        SELECT c.registry_id, s.name AS repository, c.digest,
               sum(c.sign) AS n, max(c.size) AS size, sum(c.sign * c.size) AS logical
        FROM c JOIN stats_images s ON s.image_id = c.image_id
        GROUP BY c.registry_id, s.name, c.digest
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
        SELECT v.k, sum(x.logical) AS logical
        FROM (SELECT registry_id, repository, sum(logical) AS logical
              FROM g GROUP BY registry_id, repository) x
        LEFT JOIN stats_registry_folders m ON m.registry_id = x.registry_id
        CROSS JOIN LATERAL (VALUES ('all'), ('registry:' || x.registry_id),
                                   ('repository:' || x.repository), ('folder:' || m.folder_id)) v(k)
        WHERE v.k IS NOT NULL
        GROUP BY v.k
    )
    INSERT INTO stats_totals_pending
        (scope_key, logical, blobs, stored, reclaimable_blobs, reclaimable_bytes)
    SELECT k, sum(logical), sum(dblobs), sum(dblobs * size), sum(drecl), sum(drecl * size)
    FROM (SELECT k, logical, 0 AS dblobs, 0 AS drecl, 0 AS size FROM logical
          UNION ALL
          SELECT k, 0, dblobs, drecl, size FROM flips WHERE dblobs <> 0 OR drecl <> 0) u
    GROUP BY k
    $q$, changed);
    IF TG_OP = 'DELETE' THEN
        -- the image itself is gone (cascade): its row served the repository name above
        DELETE FROM stats_images s USING (SELECT DISTINCT image_id FROM old_rows) o
        WHERE s.image_id = o.image_id
          AND NOT EXISTS (SELECT 1 FROM images i WHERE i.id = s.image_id);
    END IF;
    -- the lineage key and blob count of each touched image
    EXECUTE format($q$
    WITH c AS (%1$s),
    touched AS (SELECT image_id, sum(sign) AS n FROM c GROUP BY image_id),
    fresh AS (
        -- the common case, every blob of an image inserted at once: the key from the rows
        SELECT c.image_id, count(*) FILTER (WHERE c.kind = 'l') AS layers,
               substring(coalesce(string_agg(stats_chain_part(c.digest), ''::bytea ORDER BY c.position)
                                  FILTER (WHERE c.kind = 'l'), ''::bytea) FROM 1 FOR 2048) AS chain
        FROM c
        JOIN stats_images s ON s.image_id = c.image_id
        JOIN touched t ON t.image_id = c.image_id
        WHERE s.blob_rows = 0 AND c.sign = 1
        GROUP BY c.image_id, t.n
        HAVING count(*) = t.n
    ),
    recomputed AS (
        SELECT t.image_id,
               (SELECT count(*) FROM image_blobs b WHERE b.image_id = t.image_id AND b.kind = 'l') AS layers,
               substring(coalesce((SELECT string_agg(stats_chain_part(b.digest), ''::bytea ORDER BY b.position)
                                   FROM image_blobs b
                                   WHERE b.image_id = t.image_id AND b.kind = 'l'),
                                  ''::bytea) FROM 1 FOR 2048) AS chain
        FROM touched t JOIN stats_images s ON s.image_id = t.image_id
        WHERE s.blob_rows + t.n > 0
          AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.image_id = t.image_id)
    ),
    emptied AS (
        -- all its blob rows gone (an image being deleted, or rewritten): nothing to read
        SELECT t.image_id, 0::bigint AS layers, ''::bytea AS chain
        FROM touched t JOIN stats_images s ON s.image_id = t.image_id
        WHERE s.blob_rows + t.n <= 0
    )
    UPDATE stats_images s
    SET blob_rows = s.blob_rows + t.n, layer_count = k.layers, chain = k.chain
    FROM touched t
    JOIN (SELECT * FROM fresh UNION ALL SELECT * FROM recomputed UNION ALL SELECT * FROM emptied) k
        ON k.image_id = t.image_id
    WHERE s.image_id = t.image_id
    $q$, changed);
    PERFORM stats_fold_pending();
    RETURN NULL;
END
$fn$;

-- Recompute every aggregate into empty stats tables (stats_rebuild and the
-- TRUNCATE triggers empty them first).
CREATE FUNCTION stats_recompute() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stats_registry_folders AS m (registry_id, folder_id)
    SELECT DISTINCT ON (registry_id) registry_id, folder_id FROM images
    WHERE folder_id IS NOT NULL
    ORDER BY registry_id, folder_id
    ON CONFLICT (registry_id) DO NOTHING;
    INSERT INTO stats_registry_folders AS m (registry_id, folder_id)
    SELECT registry_id, folder_id FROM registries ORDER BY registry_id
    ON CONFLICT (registry_id) DO UPDATE SET folder_id = excluded.folder_id;

    INSERT INTO stats_images (image_id, name, registry_id, blob_rows, layer_count, chain)
    SELECT i.id, i.name, i.registry_id, coalesce(b.blob_rows, 0), coalesce(b.layers, 0),
           substring(coalesce(b.chain, ''::bytea) FROM 1 FOR 2048)
    FROM images i
    LEFT JOIN (SELECT image_id, count(*) AS blob_rows, count(*) FILTER (WHERE kind = 'l') AS layers,
                      string_agg(stats_chain_part(digest), ''::bytea ORDER BY position)
                          FILTER (WHERE kind = 'l') AS chain
               FROM image_blobs GROUP BY image_id) b ON b.image_id = i.id;

    INSERT INTO stats_registry_refs (registry_id, digest, refs)
    SELECT registry_id, digest, count(*) FROM image_blobs GROUP BY 1, 2;
    INSERT INTO stats_repository_refs (digest, repository, refs)
    SELECT b.digest, s.name, count(*)
    FROM image_blobs b JOIN stats_images s ON s.image_id = b.image_id GROUP BY 1, 2;
    INSERT INTO stats_folder_refs (folder_id, digest, refs)
    SELECT m.folder_id, r.digest, sum(r.refs)
    FROM stats_registry_refs r JOIN stats_registry_folders m ON m.registry_id = r.registry_id
    GROUP BY 1, 2;

    INSERT INTO stats_totals (scope_key, images, compressed, logical)
    SELECT v.k, sum(x.n), sum(x.c), sum(x.l)
    FROM (SELECT i.registry_id, i.name, count(*) AS n, sum(i.compressed_size) AS c,
                 sum(coalesce(b.l, 0)) AS l
          FROM images i
          LEFT JOIN (SELECT image_id, sum(size) AS l FROM image_blobs GROUP BY 1) b ON b.image_id = i.id
          GROUP BY 1, 2) x
    LEFT JOIN stats_registry_folders m ON m.registry_id = x.registry_id
    CROSS JOIN LATERAL (VALUES ('all'), ('registry:' || x.registry_id),
                               ('repository:' || x.name), ('folder:' || m.folder_id)) v(k)
    WHERE v.k IS NOT NULL
    GROUP BY v.k;

    INSERT INTO stats_totals_pending (scope_key, blobs, stored, reclaimable_blobs, reclaimable_bytes)
    SELECT 'all', count(*) FILTER (WHERE ref_count > 0),
           coalesce(sum(size) FILTER (WHERE ref_count > 0), 0),
           count(*) FILTER (WHERE ref_count = 0), coalesce(sum(size) FILTER (WHERE ref_count = 0), 0)
    FROM blobs
    UNION ALL
    SELECT k, count(*), sum(size), 0, 0
    FROM (SELECT 'registry:' || r.registry_id AS k, b.size FROM stats_registry_refs r
          JOIN blobs b ON b.digest = r.digest
          UNION ALL
          SELECT 'folder:' || r.folder_id, b.size FROM stats_folder_refs r
          JOIN blobs b ON b.digest = r.digest
          UNION ALL
          SELECT 'repository:' || r.repository, b.size FROM stats_repository_refs r
          JOIN blobs b ON b.digest = r.digest) x
    GROUP BY k;

    WITH moved AS (DELETE FROM stats_totals_pending RETURNING *)
    INSERT INTO stats_totals AS t (scope_key, blobs, stored, reclaimable_blobs, reclaimable_bytes)
    SELECT scope_key, sum(blobs), sum(stored), sum(reclaimable_blobs), sum(reclaimable_bytes)
    FROM moved GROUP BY scope_key
    ON CONFLICT (scope_key) DO UPDATE SET
        blobs = excluded.blobs, stored = excluded.stored,
        reclaimable_blobs = excluded.reclaimable_blobs, reclaimable_bytes = excluded.reclaimable_bytes;
END
$$;

-- Recompute every aggregate from images, image_blobs, blobs and registries (the
-- migration's backfill; also a repair). Blocks writers while it runs. Per-scope
-- reclaimable history before the run is not known: it starts at zero (the whole
-- index's comes from the orphaned rows of blobs).
CREATE OR REPLACE FUNCTION stats_rebuild() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE images, image_blobs, blobs, registries IN SHARE MODE;
    -- what was learned of registries' folders stays (images that told it may be gone)
    TRUNCATE stats_images, stats_registry_refs, stats_folder_refs, stats_repository_refs,
             stats_totals, stats_totals_pending;
    PERFORM stats_recompute();
END
$$;

-- DELETE, not TRUNCATE: the statement that fired this may have truncated them too.
CREATE FUNCTION stats_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM stats_images;
    DELETE FROM stats_registry_refs;
    DELETE FROM stats_folder_refs;
    DELETE FROM stats_repository_refs;
    DELETE FROM stats_totals;
    DELETE FROM stats_totals_pending;
    PERFORM stats_recompute();
    RETURN NULL;
END
$$;

CREATE TRIGGER stats_images_truncate AFTER TRUNCATE ON images
    FOR EACH STATEMENT EXECUTE FUNCTION stats_truncated();
CREATE TRIGGER stats_image_blobs_truncate AFTER TRUNCATE ON image_blobs
    FOR EACH STATEMENT EXECUTE FUNCTION stats_truncated();
CREATE TRIGGER stats_blobs_truncate AFTER TRUNCATE ON blobs
    FOR EACH STATEMENT EXECUTE FUNCTION stats_truncated();
