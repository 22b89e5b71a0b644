-- An event's id (its CloudEvents `ce_id`) derived from its outbox position, not
-- stored (issue 15, the index's footprint; docs/INDEXES.md, "The outbox").
--
-- Each row stored a random UUID (gen_random_uuid(), 16 bytes; ~75 bytes an image
-- at the first mirror's 4.7 events an image) that nothing looks up: the relay and
-- the feed only carry it. The position `id` is already unique for the life of the
-- database (it is the feed's cursor; nothing resets its sequence), so the id is now
-- a function of it: an RFC 9562 version 8 UUID whose first 64 bits are this
-- database's own (60 random bits drawn once, here, and the version) and whose last
-- 64 are the variant and the position. Stable on every read and every re-delivery;
-- distinct from another database's events (its own random bits) and from the
-- random (version 4) ids rows written before keep.
DO $$
DECLARE
    r text := replace(gen_random_uuid()::text, '-', '');
BEGIN
    EXECUTE format(
        'CREATE FUNCTION outbox_event_id(id bigint) RETURNS uuid '
        'LANGUAGE sql IMMUTABLE PARALLEL SAFE '
        -- the top bit set and the next clear: the variant (ids stay below 2^62)
        'RETURN (%L || to_hex(id | (-9223372036854775808)::bigint))::uuid',
        substr(r, 1, 12) || '8' || substr(r, 14, 3));
END
$$;

ALTER TABLE outbox
    ALTER COLUMN event_id DROP DEFAULT,
    ALTER COLUMN event_id DROP NOT NULL;

-- The view every reader of events selects (sql/104): the same columns, the id
-- derived where the row has none.
CREATE OR REPLACE VIEW outbox_events AS
SELECT o.id, coalesce(o.event_id, outbox_event_id(o.id)) AS event_id,
       o.topic, o.key, o.type, o.source, o.time,
       (SELECT s.sent_at FROM outbox_sent AS s WHERE s.up_to >= o.id
        ORDER BY s.up_to LIMIT 1) AS sent_at,
       CASE WHEN o.data_tail IS NULL THEN o.data
            WHEN o.type_code = 1 THEN
                (SELECT (left(image_doc(i), -1) || o.data_tail || '}')::json
                 FROM images AS i WHERE i.id = o.key)
            ELSE (outbox_key_prefix(o.type_code, o.key) || o.data_tail)::json
       END AS data,
       CASE WHEN o.data_tail IS NULL THEN o.data::text
            WHEN o.type_code = 1 THEN
                (SELECT left(image_doc(i), -1) || o.data_tail || '}'
                 FROM images AS i WHERE i.id = o.key)
            ELSE outbox_key_prefix(o.type_code, o.key) || o.data_tail
       END AS payload
FROM outbox AS o;
