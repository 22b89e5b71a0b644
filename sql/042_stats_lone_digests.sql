-- Cheaper ingest: a digest carried by one image blob row only (most new layers
-- and configs: they are the image's own) gets no per-scope rows; its scopes count
-- it from the statement's rows. Its rows are written the moment a second row
-- adds it or its row goes (see the function). Measured in bench/RESULTS.md.

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
        SELECT DISTINCT c.digest FROM c
        WHERE NOT EXISTS (SELECT 1 FROM stats_repository_refs r WHERE r.digest = c.digest)
    ),
    before AS (
        SELECT b.digest, b.image_id, b.registry_id, 1 AS n
        FROM image_blobs b JOIN bare x ON x.digest = b.digest
        UNION ALL
        SELECT c.digest, c.image_id, c.registry_id, -c.sign FROM c JOIN bare x ON x.digest = c.digest
    ),
    per AS (
        SELECT x.digest, s.name, x.registry_id, sum(x.n) AS n
        FROM before x JOIN stats_images s ON s.image_id = x.image_id
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
    g0 AS (
        SELECT c.registry_id, s.name AS repository, c.digest,
               sum(c.sign) AS n, max(c.size) AS size, sum(c.sign * c.size) AS logical
        FROM c JOIN stats_images s ON s.image_id = c.image_id
        GROUP BY c.registry_id, s.name, c.digest
    ),
    -- still bare after the step above: one row added, by one image, none before
    implicit AS (
        SELECT c.digest FROM c
        WHERE NOT EXISTS (SELECT 1 FROM stats_repository_refs r WHERE r.digest = c.digest)
        GROUP BY c.digest
        HAVING bool_and(c.sign = 1) AND count(*) = 1
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

-- A registry's folder learned late: its lone digests count for the folder too.
CREATE OR REPLACE FUNCTION stats_learn_folder(r text, f text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    previous text;
    sign integer;
    target text;
BEGIN
    PERFORM pg_advisory_xact_lock(1835627635, hashtext(r));
    SELECT folder_id INTO previous FROM stats_registry_folders WHERE registry_id = r FOR UPDATE;
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
            SELECT m.digest, b.size,
                   (m.after > 0)::int - (coalesce(m.before, 0) > 0)::int AS dblobs,
                   (m.after = 0)::int - (coalesce(m.before = 0, false))::int AS dreclaimable
            FROM moved m JOIN blobs b ON b.digest = m.digest
        ), own AS (
            SELECT coalesce(sum(images), 0) AS images, coalesce(sum(compressed), 0) AS compressed,
                   coalesce(sum(logical), 0) AS logical
            FROM (SELECT images, compressed, logical FROM stats_totals WHERE scope_key = 'registry:' || r
                  UNION ALL
                  SELECT images, compressed, logical FROM stats_totals_pending WHERE scope_key = 'registry:' || r) x
        )
        INSERT INTO stats_totals_pending
            (scope_key, images, compressed, logical, blobs, stored, reclaimable_blobs, reclaimable_bytes)
        SELECT 'folder:' || target, sign * own.images, sign * own.compressed, sign * own.logical,
               coalesce((SELECT sum(dblobs) FROM flips), 0),
               coalesce((SELECT sum(dblobs * size) FROM flips), 0),
               coalesce((SELECT sum(dreclaimable) FROM flips), 0),
               coalesce((SELECT sum(dreclaimable * size) FROM flips), 0)
        FROM own;
        -- digests only r's images ever held have no rows: one blob each for the folder
        INSERT INTO stats_totals_pending (scope_key, blobs, stored)
        SELECT 'folder:' || target, sign * count(*), sign * coalesce(sum(x.size), 0)
        FROM (SELECT b.digest, max(b.size) AS size
              FROM images i JOIN image_blobs b ON b.image_id = i.id
              WHERE i.registry_id = r
                AND NOT EXISTS (SELECT 1 FROM stats_repository_refs p WHERE p.digest = b.digest)
              GROUP BY b.digest) x;
    END LOOP;
    INSERT INTO stats_registry_folders (registry_id, folder_id) VALUES (r, f)
    ON CONFLICT (registry_id) DO UPDATE SET folder_id = excluded.folder_id;
END
$$;
