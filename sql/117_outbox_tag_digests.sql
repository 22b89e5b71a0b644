-- A tag event's digest as its 32 bytes (issue 15, the index's footprint;
-- docs/INDEXES.md, "The outbox").
--
-- A registry.tag.* row stores its payload as a tail after the key's prefix (sql/101):
-- ',"imageId":"…","digest":"sha256:<64 hex digits>",…}', ~133 bytes at the
-- simulator's, 64 of them the tagged image's digest (~1.1 tag events an image). Such
-- a row now keeps the digest's 32 bytes in key_digest (its key, "<repository>:<tag>",
-- stays text: the subject is unchanged) and its tail without the 64 digits;
-- outbox_tail puts them back after the tail's first '"digest":"sha256:'. The writer
-- (mirror/store/outbox.py, INSERT_EVENTS) stores a row so only when putting them back
-- gives its tail byte for byte; any other tag row keeps its whole tail. A blob row's
-- key_digest is its key (sql/107, key NULL): its tail is read as stored.
--
-- Rows written before keep their tails (key_digest NULL).
CREATE FUNCTION outbox_tail(key text, key_digest bytea, tail text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN key IS NULL OR key_digest IS NULL THEN tail
            ELSE overlay(tail PLACING encode(key_digest, 'hex')
                         FROM strpos(tail, '"digest":"sha256:') + 17 FOR 0)
       END;

ALTER TABLE outbox
    DROP CONSTRAINT outbox_key_text_or_digest,
    ADD CONSTRAINT outbox_key_text_or_digest CHECK (
        CASE WHEN key_digest IS NULL THEN key IS NOT NULL
             WHEN key IS NULL THEN octet_length(key_digest) = 32 AND type_code IN (4, 5)
             ELSE octet_length(key_digest) = 32 AND type_code IN (6, 7)
                  AND data_tail IS NOT NULL
        END);

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
                  || outbox_tail(o.key, o.key_digest, o.data_tail))::json
       END AS data,
       CASE WHEN o.data_tail IS NULL THEN o.data::text
            WHEN o.type_code = 1 THEN
                (SELECT left(image_doc(i), -1) || o.data_tail || '}'
                 FROM images AS i WHERE i.id = o.key)
            ELSE outbox_key_prefix(o.type_code, outbox_subject(o.key, o.key_digest))
                 || outbox_tail(o.key, o.key_digest, o.data_tail)
       END AS payload
FROM outbox AS o;
