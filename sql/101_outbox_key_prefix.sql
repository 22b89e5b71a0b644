-- Blob and tag events store their payload without what the key already says
-- (docs/INDEXES.md, "The outbox"; docs/EVENTS.md, "Stored and derived payloads").
--
-- A registry.blob.* payload starts {"digest":"<key>" (a 71-character digest
-- stored twice before), a registry.tag.* payload {"repository":"<r>","tag":"<t>"
-- for the key <r>:<t>. Such a row stores data NULL and the rest of the payload
-- in data_tail; readers (the view outbox_events) put outbox_key_prefix(type, key)
-- before it. The key never changes, so nothing has to be written out later.
--
-- outbox_key_prefix is the one definition both sides use: the writer
-- (mirror/store/outbox.py, INSERT_EVENTS) stores a tail only when
-- outbox_key_prefix(type, key) || tail is the payload byte for byte, and stores
-- the payload whole otherwise (a key that JSON escapes, any other shape). It
-- concatenates plain text (no JSON function whose output a later PostgreSQL
-- could change): its result for a stored row can never drift.
--
-- Rows written before this migration keep their stored payloads.
CREATE FUNCTION outbox_key_prefix(type_code smallint, key text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN type_code IN (4, 5) THEN '{"digest":"' || key || '"'
    WHEN type_code IN (6, 7) THEN
        '{"repository":"' || left(key, -(length(split_part(key, ':', -1)) + 1))
        || '","tag":"' || split_part(key, ':', -1) || '"'
END;

ALTER TABLE outbox
    DROP CONSTRAINT outbox_data_stored_or_derived,
    ADD CONSTRAINT outbox_data_stored_or_derived CHECK (
        CASE WHEN data_tail IS NULL THEN data IS NOT NULL
             ELSE data IS NULL AND type_code IN (1, 4, 5, 6, 7) END);

CREATE OR REPLACE VIEW outbox_events AS
SELECT o.id, o.event_id, o.topic, o.key, o.type, o.source, o.time, o.sent_at,
       CASE WHEN o.data_tail IS NULL THEN o.data
            WHEN o.type_code = 1 THEN
                (SELECT (left(i.doc::text, -1) || o.data_tail || '}')::json
                 FROM images AS i WHERE i.id = o.key)
            ELSE (outbox_key_prefix(o.type_code, o.key) || o.data_tail)::json
       END AS data,
       CASE WHEN o.data_tail IS NULL THEN o.data::text
            WHEN o.type_code = 1 THEN
                (SELECT left(i.doc::text, -1) || o.data_tail || '}'
                 FROM images AS i WHERE i.id = o.key)
            ELSE outbox_key_prefix(o.type_code, o.key) || o.data_tail
       END AS payload
FROM outbox AS o;
