-- The dedup aggregates leave the ingest transaction (docs/STATS.md, "How the
-- figures stay cheap"). Writers of images, image_blobs and registries now only
-- append what changed to stats_changes (a cheap statement-level trigger: one
-- row per image per statement); mirror/stats/folder.py folds that log into the
-- aggregates in big set-based batches, one transaction a batch, and records in
-- stats_folded up to where the figures are exact.
--
-- This migration removes the in-transaction triggers and functions of
-- sql/040-043 (their bodies there are history now) and adds the log. Every
-- current stats function, and the triggers, live in sql/routines/stats.sql
-- (re-applied whenever that file changes); it recomputes the aggregates once,
-- after this migration, from the index itself (rebuild_pending below).

DROP TRIGGER IF EXISTS stats_images_insert ON images;
DROP TRIGGER IF EXISTS stats_images_update ON images;
DROP TRIGGER IF EXISTS stats_images_delete ON images;
DROP TRIGGER IF EXISTS stats_images_truncate ON images;
DROP TRIGGER IF EXISTS stats_image_blobs_insert ON image_blobs;
DROP TRIGGER IF EXISTS stats_image_blobs_update ON image_blobs;
DROP TRIGGER IF EXISTS stats_image_blobs_delete ON image_blobs;
DROP TRIGGER IF EXISTS stats_image_blobs_truncate ON image_blobs;
DROP TRIGGER IF EXISTS stats_blobs_insert ON blobs;
DROP TRIGGER IF EXISTS stats_blobs_update ON blobs;
DROP TRIGGER IF EXISTS stats_blobs_delete ON blobs;
DROP TRIGGER IF EXISTS stats_blobs_truncate ON blobs;
DROP TRIGGER IF EXISTS stats_registries_insert ON registries;
DROP TRIGGER IF EXISTS stats_registries_update ON registries;

DROP FUNCTION IF EXISTS stats_images_changed();
DROP FUNCTION IF EXISTS stats_image_blobs_changed();
DROP FUNCTION IF EXISTS stats_blobs_changed();
DROP FUNCTION IF EXISTS stats_registries_changed();
DROP FUNCTION IF EXISTS stats_truncated();
DROP FUNCTION IF EXISTS stats_fold_pending();
DROP FUNCTION IF EXISTS stats_lock_registries(text[]);
DROP FUNCTION IF EXISTS stats_learn_folder(text, text);
DROP FUNCTION IF EXISTS stats_rebuild();
DROP FUNCTION IF EXISTS stats_recompute();
DROP FUNCTION IF EXISTS stats_chain_part(text);

-- One folder writes the aggregates now: no more contention to spread.
DROP TABLE IF EXISTS stats_totals_pending;

-- What changed and is not folded yet. kind 'i': an images row added (+1),
-- removed (-1) or changed (0: its compressed size or folder); 'b': the
-- image_blobs rows of one image that one statement added (+1) or removed (-1),
-- as arrays in position order; 'r': a registries row (its folder).
CREATE TABLE stats_changes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    kind        "char" NOT NULL CHECK (kind IN ('i', 'b', 'r')),
    image_id    text,
    registry_id text NOT NULL,
    name        text,
    folder_id   text,
    delta       integer NOT NULL DEFAULT 0,
    compressed  bigint NOT NULL DEFAULT 0,
    digests     text[],
    sizes       bigint[],
    layer       boolean[]
);
-- Every row is deleted within about a second of its commit: vacuum it often, so a
-- read of what is behind (a count over the log) does not wade through dead rows.
ALTER TABLE stats_changes SET (autovacuum_vacuum_scale_factor = 0.0,
                               autovacuum_vacuum_threshold = 20000,
                               autovacuum_vacuum_insert_scale_factor = 0.0,
                               autovacuum_vacuum_insert_threshold = 20000);

-- Digests one image blob row references, and nothing ever did otherwise (most
-- new digests: an image's config and own layers): one row here instead of a
-- row in each of stats_registry_refs, stats_repository_refs and
-- stats_folder_refs (count 1 in the scopes of that row). The fold moves a digest
-- to those tables the moment a batch changes it again.
CREATE TABLE stats_lone_digests (
    digest      text PRIMARY KEY,
    registry_id text NOT NULL,
    repository  text NOT NULL,
    size        bigint NOT NULL
);

-- Up to where the aggregates are exact: every change committed before
-- folded_at is in them, and event_id is the newest outbox event by then
-- (outbox ids follow commit order). One row.
CREATE TABLE stats_folded (
    one             boolean PRIMARY KEY DEFAULT true CHECK (one),
    event_id        bigint NOT NULL DEFAULT 0,
    folded_at       timestamptz NOT NULL DEFAULT now(),
    batches         bigint NOT NULL DEFAULT 0,
    rebuild_pending boolean NOT NULL DEFAULT true
);
INSERT INTO stats_folded DEFAULT VALUES;
