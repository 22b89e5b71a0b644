-- A blob event's key (the blob's digest) stored as its 32 bytes (issue 15, the
-- index's footprint; docs/INDEXES.md, "The outbox").
--
-- A first mirror writes ~2.6 registry.blob.added events an image, each keyed by
-- "sha256:" and 64 hex digits: 72 bytes of text. Such a key is now stored in
-- key_digest (33 bytes) with key NULL; every reader reads the view outbox_events,
-- whose key is outbox_subject(key, key_digest), the text again. The writer
-- (mirror/store/outbox.py, INSERT_EVENTS) stores the bytes only when
-- 'sha256:' || encode(bytes, 'hex') is the key byte for byte (any other key, an
-- image id, a tag, a digest of another form, stays text). Rows written before keep
-- their text.
--
-- The subject lookups (the feed's subject filter, the images triggers) go through
-- the hash index, now over outbox_subject(key, key_digest): a query that says
-- outbox_events.key = $n names the same expression.
CREATE FUNCTION outbox_subject(key text, key_digest bytea) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN coalesce(key, 'sha256:' || encode(key_digest, 'hex'));

ALTER TABLE outbox
    ALTER COLUMN key DROP NOT NULL,
    ADD COLUMN key_digest bytea,
    ADD CONSTRAINT outbox_key_text_or_digest CHECK (
        CASE WHEN key_digest IS NULL THEN key IS NOT NULL
             ELSE key IS NULL AND octet_length(key_digest) = 32 AND type_code IN (4, 5)
        END);

CREATE INDEX outbox_subject_hash ON outbox USING hash (outbox_subject(key, key_digest));
DROP INDEX outbox_key_hash;
ALTER INDEX outbox_subject_hash RENAME TO outbox_key_hash;

-- The view every reader selects (sql/105), its key from either column.
CREATE OR REPLACE VIEW outbox_events AS
SELECT o.id, coalesce(o.event_id, outbox_event_id(o.id)) AS event_id,
       o.topic, outbox_subject(o.key, o.key_digest) AS key, o.type, o.source, o.time,
       (SELECT s.sent_at FROM outbox_sent AS s WHERE s.up_to >= o.id
        ORDER BY s.up_to LIMIT 1) AS sent_at,
       CASE WHEN o.data_tail IS NULL THEN o.data
            WHEN o.type_code = 1 THEN
                (SELECT (left(image_doc(i), -1) || o.data_tail || '}')::json
                 FROM images AS i WHERE i.id = o.key)
            ELSE (outbox_key_prefix(o.type_code, outbox_subject(o.key, o.key_digest))
                  || o.data_tail)::json
       END AS data,
       CASE WHEN o.data_tail IS NULL THEN o.data::text
            WHEN o.type_code = 1 THEN
                (SELECT left(image_doc(i), -1) || o.data_tail || '}'
                 FROM images AS i WHERE i.id = o.key)
            ELSE outbox_key_prefix(o.type_code, outbox_subject(o.key, o.key_digest))
                 || o.data_tail
       END AS payload
FROM outbox AS o;
