-- Dedup statistics kept current by the writes themselves (docs/STATS.md).
--
-- Statement-level AFTER triggers with transition tables on images, image_blobs,
-- blobs and registries fold every change into per-scope aggregates inside the
-- transaction of the change, set-based (one pass over the statement's rows), so
-- the ingest needs to know nothing of them and a read is a keyed lookup:
--
--   stats_totals (+ stats_totals_pending)  per scope key: images, compressed,
--       logical, blobs (distinct digests referenced), stored, reclaimable;
--       keys are 'all', 'folder:ID', 'registry:ID', 'repository:NAME'.
--   stats_registry_refs / stats_folder_refs / stats_repository_refs
--       per (scope, digest): how many image_blobs rows of the scope carry the
--       digest. A row going 0 -> n or n -> 0 is what moves a scope's distinct
--       blobs, stored and reclaimable figures. Rows stay at 0: "referenced in
--       the scope once, by nothing now" is the scope's reclaimable set.
--   stats_images  per image: repository, registry and its layer chain key
--       (lineage lookups by prefix).
--   stats_registry_folders  the folder of each registry as far as known
--       (from registries, or images.folder_id); learning it late folds the
--       registry's figures into the folder's.
--
-- The whole index's distinct/stored/reclaimable figures come from blobs.ref_count
-- transitions (the ingest keeps ref_count); dedup is by digest, never blob id.
--
-- Hot rows: a trigger never waits on another transaction's aggregate row. It
-- appends to stats_totals_pending and folds pending rows into stats_totals only
-- when it holds (try-lock) the fold lock; readers add the pending rows.

CREATE TABLE stats_registry_folders (
    registry_id text PRIMARY KEY,
    folder_id   text NOT NULL
);

CREATE TABLE stats_images (
    image_id    text PRIMARY KEY,
    name        text NOT NULL,
    registry_id text NOT NULL,
    blob_rows   integer NOT NULL DEFAULT 0,
    layer_count integer NOT NULL DEFAULT 0,
    -- 8 bytes per layer (md5 of the digest, truncated), in layer order, of the
    -- first 256 layers (a btree key stays small): A's layers a prefix of B's => chain(A)
    -- a prefix of chain(B).
    -- Candidates found by the key are checked against the real digests.
    chain       bytea NOT NULL DEFAULT ''
);
CREATE INDEX stats_images_chain ON stats_images (chain, image_id);

CREATE TABLE stats_registry_refs (
    registry_id text NOT NULL,
    digest      text NOT NULL,
    refs        bigint NOT NULL,
    PRIMARY KEY (registry_id, digest)
);

CREATE TABLE stats_folder_refs (
    folder_id text NOT NULL,
    digest    text NOT NULL,
    refs      bigint NOT NULL,
    PRIMARY KEY (folder_id, digest)
);

-- digest first: "which repositories hold this layer" is a range of the key
CREATE TABLE stats_repository_refs (
    digest     text NOT NULL,
    repository text NOT NULL,
    refs       bigint NOT NULL,
    PRIMARY KEY (digest, repository)
);

CREATE TABLE stats_totals (
    scope_key         text PRIMARY KEY,
    images            bigint NOT NULL DEFAULT 0,
    compressed        bigint NOT NULL DEFAULT 0,
    logical           bigint NOT NULL DEFAULT 0,
    blobs             bigint NOT NULL DEFAULT 0,
    stored            bigint NOT NULL DEFAULT 0,
    reclaimable_blobs bigint NOT NULL DEFAULT 0,
    reclaimable_bytes bigint NOT NULL DEFAULT 0
);

CREATE TABLE stats_totals_pending (
    id                bigserial PRIMARY KEY,
    scope_key         text NOT NULL,
    images            bigint NOT NULL DEFAULT 0,
    compressed        bigint NOT NULL DEFAULT 0,
    logical           bigint NOT NULL DEFAULT 0,
    blobs             bigint NOT NULL DEFAULT 0,
    stored            bigint NOT NULL DEFAULT 0,
    reclaimable_blobs bigint NOT NULL DEFAULT 0,
    reclaimable_bytes bigint NOT NULL DEFAULT 0
);
CREATE INDEX stats_totals_pending_key ON stats_totals_pending (scope_key);

-- Top layers by bytes saved, and the largest reclaimable blobs, straight from an index.
CREATE INDEX stats_blobs_saved ON blobs (((ref_count - 1) * size) DESC, digest) WHERE ref_count > 1;
CREATE INDEX stats_blobs_reclaimable ON blobs (size DESC, digest) WHERE ref_count = 0;


-- The 8-byte key of one layer digest in a chain.
CREATE FUNCTION stats_chain_part(digest text) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN substring(decode(md5(digest), 'hex') FROM 1 FOR 8);

-- Fold pending aggregate rows into stats_totals when no other transaction is
-- folding. Only under READ COMMITTED: each statement then sees what the previous
-- fold holder committed, so two folds never race on the same rows.
CREATE FUNCTION stats_fold_pending() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed'
       OR NOT pg_try_advisory_xact_lock(1835627634, 0) THEN
        RETURN;
    END IF;
    WITH moved AS (
        DELETE FROM stats_totals_pending RETURNING *
    )
    INSERT INTO stats_totals AS t
        (scope_key, images, compressed, logical, blobs, stored, reclaimable_blobs, reclaimable_bytes)
    SELECT scope_key, sum(images), sum(compressed), sum(logical), sum(blobs), sum(stored),
           sum(reclaimable_blobs), sum(reclaimable_bytes)
    FROM moved GROUP BY scope_key ORDER BY scope_key
    ON CONFLICT (scope_key) DO UPDATE SET
        images = t.images + excluded.images,
        compressed = t.compressed + excluded.compressed,
        logical = t.logical + excluded.logical,
        blobs = t.blobs + excluded.blobs,
        stored = t.stored + excluded.stored,
        reclaimable_blobs = t.reclaimable_blobs + excluded.reclaimable_blobs,
        reclaimable_bytes = t.reclaimable_bytes + excluded.reclaimable_bytes;
END
$$;

-- Writers of a registry's figures hold its lock shared until commit; learning
-- the registry's folder holds it exclusively, so no write is counted for the
-- registry but missed by the folder it moves into.
CREATE FUNCTION stats_lock_registries(registry_ids text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(1835627635, hashtext(r))
    FROM (SELECT DISTINCT r FROM unnest(registry_ids) r ORDER BY r) x;
END
$$;

-- Registry r belongs to folder f: fold its per-digest refs and totals into the
-- folder's (and out of a previous folder's, should a registry ever move).
CREATE FUNCTION stats_learn_folder(r text, f text) RETURNS void
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
    END LOOP;
    INSERT INTO stats_registry_folders (registry_id, folder_id) VALUES (r, f)
    ON CONFLICT (registry_id) DO UPDATE SET folder_id = excluded.folder_id;
END
$$;


-- images: counts and compressed bytes per scope; folder learning from folder_id.
CREATE FUNCTION stats_images_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM stats_learn_folder(x.registry_id, x.folder_id)
        FROM (SELECT DISTINCT ON (n.registry_id) n.registry_id, n.folder_id
              FROM new_rows n
              WHERE n.folder_id IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM stats_registry_folders m
                                WHERE m.registry_id = n.registry_id AND m.folder_id = n.folder_id)
              ORDER BY n.registry_id, n.folder_id) x;
    END IF;
    IF TG_OP = 'INSERT' THEN
        PERFORM stats_lock_registries(ARRAY(SELECT DISTINCT registry_id FROM new_rows));
        INSERT INTO stats_images (image_id, name, registry_id)
        SELECT id, name, registry_id FROM new_rows;
        INSERT INTO stats_totals_pending (scope_key, images, compressed)
        SELECT v.k, sum(g.n), sum(g.c)
        FROM (SELECT registry_id, name, count(*) AS n, sum(compressed_size) AS c
              FROM new_rows GROUP BY registry_id, name) g
        LEFT JOIN stats_registry_folders m ON m.registry_id = g.registry_id
        CROSS JOIN LATERAL (VALUES ('all'), ('registry:' || g.registry_id),
                                   ('repository:' || g.name), ('folder:' || m.folder_id)) v(k)
        WHERE v.k IS NOT NULL
        GROUP BY v.k;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM stats_lock_registries(ARRAY(SELECT DISTINCT registry_id FROM old_rows));
        -- images with blobs keep their row until the (cascaded) image_blobs trigger,
        -- which fires after this one and needs the repository name
        DELETE FROM stats_images s USING old_rows o WHERE s.image_id = o.id AND s.blob_rows = 0;
        INSERT INTO stats_totals_pending (scope_key, images, compressed)
        SELECT v.k, -sum(g.n), -sum(g.c)
        FROM (SELECT registry_id, name, count(*) AS n, sum(compressed_size) AS c
              FROM old_rows GROUP BY registry_id, name) g
        LEFT JOIN stats_registry_folders m ON m.registry_id = g.registry_id
        CROSS JOIN LATERAL (VALUES ('all'), ('registry:' || g.registry_id),
                                   ('repository:' || g.name), ('folder:' || m.folder_id)) v(k)
        WHERE v.k IS NOT NULL
        GROUP BY v.k;
    ELSE
        -- name and registry are immutable upstream; only compressedSize can move
        INSERT INTO stats_totals_pending (scope_key, compressed)
        SELECT v.k, sum(g.c)
        FROM (SELECT n.registry_id, n.name, sum(n.compressed_size - o.compressed_size) AS c
              FROM new_rows n JOIN old_rows o ON o.id = n.id
              WHERE n.compressed_size <> o.compressed_size
              GROUP BY n.registry_id, n.name) g
        LEFT JOIN stats_registry_folders m ON m.registry_id = g.registry_id
        CROSS JOIN LATERAL (VALUES ('all'), ('registry:' || g.registry_id),
                                   ('repository:' || g.name), ('folder:' || m.folder_id)) v(k)
        WHERE v.k IS NOT NULL
        GROUP BY v.k;
    END IF;
    PERFORM stats_fold_pending();
    RETURN NULL;
END
$$;

-- image_blobs: logical bytes and per-scope digest refs (-> distinct, stored,
-- reclaimable per registry, folder and repository); the layer chain of each image.
-- One body for the three operations: %1$s is the changed rows with a sign.
CREATE FUNCTION stats_image_blobs_changed() RETURNS trigger
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

-- blobs: the whole index's distinct, stored and reclaimable figures follow ref_count.
CREATE FUNCTION stats_blobs_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO stats_totals_pending (scope_key, blobs, stored, reclaimable_blobs, reclaimable_bytes)
        SELECT 'all', count(*) FILTER (WHERE ref_count > 0),
               coalesce(sum(size) FILTER (WHERE ref_count > 0), 0),
               count(*) FILTER (WHERE ref_count = 0),
               coalesce(sum(size) FILTER (WHERE ref_count = 0), 0)
        FROM new_rows HAVING count(*) > 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO stats_totals_pending (scope_key, blobs, stored, reclaimable_blobs, reclaimable_bytes)
        SELECT 'all', -count(*) FILTER (WHERE ref_count > 0),
               -coalesce(sum(size) FILTER (WHERE ref_count > 0), 0),
               -count(*) FILTER (WHERE ref_count = 0),
               -coalesce(sum(size) FILTER (WHERE ref_count = 0), 0)
        FROM old_rows HAVING count(*) > 0;
    ELSE
        INSERT INTO stats_totals_pending (scope_key, blobs, stored, reclaimable_blobs, reclaimable_bytes)
        SELECT 'all', sum(d.b), sum(d.s), sum(d.rb), sum(d.rs)
        FROM (SELECT (n.ref_count > 0)::int - (o.ref_count > 0)::int AS b,
                     (n.ref_count > 0)::int * n.size - (o.ref_count > 0)::int * o.size AS s,
                     (n.ref_count = 0)::int - (o.ref_count = 0)::int AS rb,
                     (n.ref_count = 0)::int * n.size - (o.ref_count = 0)::int * o.size AS rs
              FROM new_rows n JOIN old_rows o ON o.digest = n.digest
              WHERE (n.ref_count > 0) <> (o.ref_count > 0) OR n.size <> o.size) d
        HAVING count(*) > 0;
    END IF;
    PERFORM stats_fold_pending();
    RETURN NULL;
END
$$;

CREATE FUNCTION stats_registries_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM stats_learn_folder(n.registry_id, n.folder_id)
    FROM (SELECT registry_id, folder_id FROM new_rows ORDER BY registry_id) n;
    PERFORM stats_fold_pending();
    RETURN NULL;
END
$$;

CREATE TRIGGER stats_images_insert AFTER INSERT ON images
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_images_changed();
CREATE TRIGGER stats_images_update AFTER UPDATE ON images
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION stats_images_changed();
CREATE TRIGGER stats_images_delete AFTER DELETE ON images
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_images_changed();

CREATE TRIGGER stats_image_blobs_insert AFTER INSERT ON image_blobs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_image_blobs_changed();
CREATE TRIGGER stats_image_blobs_update AFTER UPDATE ON image_blobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION stats_image_blobs_changed();
CREATE TRIGGER stats_image_blobs_delete AFTER DELETE ON image_blobs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_image_blobs_changed();

CREATE TRIGGER stats_blobs_insert AFTER INSERT ON blobs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_blobs_changed();
CREATE TRIGGER stats_blobs_update AFTER UPDATE ON blobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION stats_blobs_changed();
CREATE TRIGGER stats_blobs_delete AFTER DELETE ON blobs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_blobs_changed();

CREATE TRIGGER stats_registries_insert AFTER INSERT ON registries
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_registries_changed();
CREATE TRIGGER stats_registries_update AFTER UPDATE ON registries
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_registries_changed();


-- Recompute every aggregate from images, image_blobs, blobs and registries (the
-- migration's backfill; also a repair). Blocks writers while it runs. Per-scope
-- reclaimable history before the run is not known: it starts at zero (the whole
-- index's comes from the orphaned rows of blobs).
CREATE FUNCTION stats_rebuild() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE images, image_blobs, blobs, registries IN SHARE MODE;
    -- what was learned of registries' folders stays (images that told it may be gone)
    TRUNCATE stats_images, stats_registry_refs, stats_folder_refs, stats_repository_refs,
             stats_totals, stats_totals_pending;

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

SELECT stats_rebuild();
