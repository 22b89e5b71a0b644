-- A registry.image.created event no longer stores its payload twice (docs/INDEXES.md,
-- "The outbox"; docs/EVENTS.md, "Stored and derived payloads").
--
-- Its payload is, byte for byte, the image's doc with the event's origin (e.g.
-- `,"runId":"N"`) before the last brace. Such a row stores data NULL and only that
-- tail (`data_tail`); readers go through the view `outbox_events`, whose `data`
-- is the stored payload or, for such a row, left(images.doc, -1) || data_tail || '}'.
--
-- 1. Written only when provably identical: the writer (mirror/store/outbox.py,
--    INSERT_EVENTS) compares the payload with the image's doc as its own
--    transaction sees it, the image row share-locked, and stores the payload
--    whole whenever the reconstruction would differ by a byte.
-- 2. Written out before the doc changes: the triggers below materialise a
--    derived payload (data = the reconstruction, data_tail NULL) in the
--    statement that changes the image's doc or deletes it, and before a TRUNCATE,
--    whatever runs it (ingest, the API's Delete, an operator's SQL). Rows are
--    locked in id order, as the relay's range update of sent_at takes them.
-- 3. Rows written before this migration keep their stored payloads.
ALTER TABLE outbox
    ADD COLUMN data_tail text,
    ALTER COLUMN data DROP NOT NULL,
    ADD CONSTRAINT outbox_data_stored_or_derived CHECK (
        CASE WHEN data_tail IS NULL THEN data IS NOT NULL ELSE data IS NULL AND type_code = 1 END);

-- What every reader of payloads selects: the outbox with the payload as published,
-- as json (data) and as its text (payload: what the relay and the feed read, the
-- derived text not parsed again). NULL only if a derived row lost its image,
-- which the triggers prevent.
CREATE VIEW outbox_events AS
SELECT o.id, o.event_id, o.topic, o.key, o.type, o.source, o.time, o.sent_at,
       CASE WHEN o.data_tail IS NULL THEN o.data
            ELSE (SELECT (left(i.doc::text, -1) || o.data_tail || '}')::json
                  FROM images AS i WHERE i.id = o.key)
       END AS data,
       CASE WHEN o.data_tail IS NULL THEN o.data::text
            ELSE (SELECT left(i.doc::text, -1) || o.data_tail || '}'
                  FROM images AS i WHERE i.id = o.key)
       END AS payload
FROM outbox AS o;

-- The derived payloads of the images in old_images whose doc is changing, written out.
-- Each image's events are looked up by the hash index on key (OFFSET 0 keeps the
-- lookup per image: a join could seq-scan the whole outbox for a few images; the
-- key's collation, not images.id's "C", so that the index serves the comparison).
CREATE FUNCTION outbox_write_out_derived() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        WITH target AS (
            SELECT e.id, left(o.doc::text, -1) || e.data_tail || '}' AS data
            FROM old_images AS o
            CROSS JOIN LATERAL (SELECT e.id FROM outbox AS e
                                WHERE e.key = o.id COLLATE "default" AND e.data_tail IS NOT NULL
                                  AND e.type_code = 1
                                OFFSET 0) AS d
            JOIN outbox AS e ON e.id = d.id
            WHERE e.data_tail IS NOT NULL  -- rechecked once locked
              AND NOT EXISTS (SELECT FROM new_images AS n
                              WHERE n.id = o.id AND n.doc::text = o.doc::text)
            ORDER BY e.id
            FOR UPDATE OF e
        )
        UPDATE outbox AS e SET data = t.data::json, data_tail = NULL
        FROM target AS t WHERE e.id = t.id;
    ELSIF TG_OP = 'DELETE' THEN
        WITH target AS (
            SELECT e.id, left(o.doc::text, -1) || e.data_tail || '}' AS data
            FROM old_images AS o
            CROSS JOIN LATERAL (SELECT e.id FROM outbox AS e
                                WHERE e.key = o.id COLLATE "default" AND e.data_tail IS NOT NULL
                                  AND e.type_code = 1
                                OFFSET 0) AS d
            JOIN outbox AS e ON e.id = d.id
            WHERE e.data_tail IS NOT NULL  -- rechecked once locked
            ORDER BY e.id
            FOR UPDATE OF e
        )
        UPDATE outbox AS e SET data = t.data::json, data_tail = NULL
        FROM target AS t WHERE e.id = t.id;
    ELSE  -- TRUNCATE, before it: every derived payload, from the images still there
        WITH target AS (
            SELECT e.id, left(i.doc::text, -1) || e.data_tail || '}' AS data
            FROM outbox AS e
            JOIN images AS i ON i.id = e.key
            WHERE e.data_tail IS NOT NULL AND e.type_code = 1
            ORDER BY e.id
            FOR UPDATE OF e
        )
        UPDATE outbox AS e SET data = t.data::json, data_tail = NULL
        FROM target AS t WHERE e.id = t.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_write_out_update AFTER UPDATE ON images
    REFERENCING OLD TABLE AS old_images NEW TABLE AS new_images
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_write_out_derived();
CREATE TRIGGER outbox_write_out_delete AFTER DELETE ON images
    REFERENCING OLD TABLE AS old_images
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_write_out_derived();
CREATE TRIGGER outbox_write_out_truncate BEFORE TRUNCATE ON images
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_write_out_derived();
