-- The stats tables name a repository by a number (issue 15, the index's footprint;
-- docs/STATS.md, "Other details").
--
-- stats_lone_digests (~2.3 rows an image), stats_repository_refs (~0.6, and its
-- primary key) and stats_images (one an image) each spelt the repository's name out,
-- ~37 bytes at the simulator's. stats_repositories keeps each name once, with a
-- 4-byte number; the fold (sql/routines/stats.sql) numbers the names of its batch,
-- and every reader joins it back (mirror/stats/queries.py, mirror/api/blobs.py).
-- A number is never reused nor renumbered: a name once seen keeps its row.
CREATE TABLE stats_repositories (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE
);

INSERT INTO stats_repositories (name)
SELECT name FROM stats_images
UNION SELECT repository FROM stats_lone_digests
UNION SELECT repository FROM stats_repository_refs
ORDER BY 1;

-- Each table written anew (an UPDATE would leave every row's old version behind),
-- its columns in an order that wastes no alignment.
CREATE TABLE stats_lone_digests_new (
    digest bytea NOT NULL PRIMARY KEY,
    repository_id integer NOT NULL,
    size bigint NOT NULL
);
INSERT INTO stats_lone_digests_new (digest, repository_id, size)
SELECT l.digest, p.id, l.size
FROM stats_lone_digests l JOIN stats_repositories p ON p.name = l.repository
ORDER BY l.digest;
DROP TABLE stats_lone_digests;
ALTER TABLE stats_lone_digests_new RENAME TO stats_lone_digests;
ALTER INDEX stats_lone_digests_new_pkey RENAME TO stats_lone_digests_pkey;

CREATE TABLE stats_repository_refs_new (
    digest bytea NOT NULL,
    repository_id integer NOT NULL,
    refs bigint NOT NULL,
    PRIMARY KEY (digest, repository_id)
);
INSERT INTO stats_repository_refs_new (digest, repository_id, refs)
SELECT r.digest, p.id, r.refs
FROM stats_repository_refs r JOIN stats_repositories p ON p.name = r.repository
ORDER BY r.digest, p.id;
DROP TABLE stats_repository_refs;
ALTER TABLE stats_repository_refs_new RENAME TO stats_repository_refs;
ALTER INDEX stats_repository_refs_new_pkey RENAME TO stats_repository_refs_pkey;

CREATE TABLE stats_images_new (
    image_id text NOT NULL PRIMARY KEY,
    repository_id integer NOT NULL,
    blob_rows integer NOT NULL DEFAULT 0,
    layer_count integer NOT NULL DEFAULT 0,
    chain bytea NOT NULL DEFAULT ''::bytea
);
INSERT INTO stats_images_new (image_id, repository_id, blob_rows, layer_count, chain)
SELECT s.image_id, p.id, s.blob_rows, s.layer_count, s.chain
FROM stats_images s JOIN stats_repositories p ON p.name = s.name
ORDER BY s.image_id;
DROP TABLE stats_images;
ALTER TABLE stats_images_new RENAME TO stats_images;
ALTER INDEX stats_images_new_pkey RENAME TO stats_images_pkey;
CREATE INDEX stats_images_chain ON stats_images (chain, image_id);

-- Tables written anew have no statistics until autovacuum gets to them.
ANALYZE stats_repositories, stats_lone_digests, stats_repository_refs, stats_images;
