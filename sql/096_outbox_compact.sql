-- A smaller outbox row, the same events (docs/INDEXES.md, "The outbox").
--
-- 1. type, topic and source were text on every row (~55 bytes of ~180 outside the
--    data): type is now a 2-byte code, source a code for the two writers the mirror
--    has (any other source, a test's or a future writer's, is kept as text), and
--    the three columns are VIRTUAL generated columns with the same names and
--    values: readers select and filter them as before, and the relay and the feed
--    publish the same bytes. A type outside the list has no code and cannot be
--    written (type_code is NOT NULL): add it here, at the end, with its schema.
-- 2. event_id loses its UNIQUE index (~40 bytes a row): it is a random UUID
--    (gen_random_uuid), looked up by nothing; consumers drop duplicates by it.
-- 3. The feed's subject lookups (key = $n, a subject's few events sorted by id)
--    read a hash index of the key instead of the btree on (key, id) from sql/070:
--    a 4-byte hash code an entry instead of the key's text (a blob digest is 71
--    characters): 117 -> ~25 bytes an event.
ALTER TABLE outbox
    ADD COLUMN type_code smallint,
    ADD COLUMN source_code smallint,
    ADD COLUMN other_source text;

UPDATE outbox SET
    type_code = array_position(ARRAY['registry.image.created', 'registry.image.updated',
                                     'registry.image.deleted', 'registry.blob.added',
                                     'registry.blob.orphaned', 'registry.tag.added',
                                     'registry.tag.removed'], type),
    source_code = array_position(ARRAY['/registry-mirror/ingest', '/registry-mirror/api'], source),
    other_source = CASE WHEN array_position(ARRAY['/registry-mirror/ingest', '/registry-mirror/api'],
                                            source) IS NULL THEN source END;

DO $$
BEGIN
    IF EXISTS (SELECT FROM outbox WHERE type_code IS NULL) THEN
        RAISE EXCEPTION 'outbox rows of an unknown event type: %',
            (SELECT string_agg(DISTINCT type, ', ') FROM outbox WHERE type_code IS NULL);
    END IF;
END
$$;

ALTER TABLE outbox
    DROP CONSTRAINT outbox_event_id_key,
    DROP CONSTRAINT IF EXISTS outbox_topic_check,
    DROP COLUMN topic,
    DROP COLUMN type,
    DROP COLUMN source,
    ALTER COLUMN type_code SET NOT NULL,
    ADD CONSTRAINT outbox_type_code_check CHECK (type_code BETWEEN 1 AND 7),
    ADD CONSTRAINT outbox_source_check CHECK ((source_code IS NULL) <> (other_source IS NULL));
ALTER TABLE outbox
    ADD COLUMN type text GENERATED ALWAYS AS (
        (ARRAY['registry.image.created', 'registry.image.updated', 'registry.image.deleted',
               'registry.blob.added', 'registry.blob.orphaned', 'registry.tag.added',
               'registry.tag.removed']::text[])[type_code]) VIRTUAL,
    ADD COLUMN topic text GENERATED ALWAYS AS (
        CASE WHEN type_code <= 3 THEN 'images' WHEN type_code <= 5 THEN 'blobs' ELSE 'tags' END) VIRTUAL,
    ADD COLUMN source text GENERATED ALWAYS AS (
        coalesce((ARRAY['/registry-mirror/ingest', '/registry-mirror/api']::text[])[source_code],
                 other_source)) VIRTUAL;

DROP INDEX outbox_key_id;
CREATE INDEX outbox_key_hash ON outbox USING hash (key);

-- The UPDATE wrote every row again: rewrite the table compactly now, not at the
-- next vacuum (CLUSTER, as VACUUM FULL cannot run in the migration's transaction).
CLUSTER outbox USING outbox_pkey;
ALTER TABLE outbox SET WITHOUT CLUSTER;
