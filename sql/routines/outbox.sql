-- The outbox's trigger function, current body (sql/100_outbox_derived_created.sql made
-- it and its triggers; docs/EVENTS.md, "Stored and derived payloads"). Re-applied by
-- the migrator whenever this file changes (mirror/store/migrate.py: routines).
--
-- The derived payloads of the images in old_images whose doc is changing, written out.
-- Each image's events are looked up by the hash index on the key (outbox_key_hash over
-- outbox_subject(key, key_digest), sql/107; OFFSET 0 keeps the
-- lookup per image: a join could seq-scan the whole outbox for a few images; the
-- key's collation, not images.id's "C", so that the index serves the comparison).
--
-- A statement that changed no row returns at once. Every page the ingest merges is an
-- INSERT ... ON CONFLICT DO UPDATE, which fires the UPDATE trigger with empty
-- transition tables; the statement below, planned once per session while the outbox
-- was small, then read the whole outbox on every page (a seq scan under the update's
-- join: ~20 ms a 1,000-image page at 100,000 images, growing with the outbox).
CREATE OR REPLACE FUNCTION outbox_write_out_derived() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (SELECT FROM old_images) THEN
            RETURN NULL;
        END IF;
        WITH target AS (
            SELECT e.id, left(image_doc(o), -1) || e.data_tail || '}' AS data
            FROM old_images AS o
            CROSS JOIN LATERAL (SELECT e.id FROM outbox AS e
                                WHERE outbox_subject(e.key, e.key_digest) = o.id COLLATE "default"
                                  AND e.data_tail IS NOT NULL
                                  AND e.type_code = 1
                                OFFSET 0) AS d
            JOIN outbox AS e ON e.id = d.id
            WHERE e.data_tail IS NOT NULL  -- rechecked once locked
              AND NOT EXISTS (SELECT FROM new_images AS n
                              WHERE n.id = o.id AND image_doc(n) = image_doc(o))
            ORDER BY e.id
            FOR UPDATE OF e
        )
        UPDATE outbox AS e SET data = t.data::json, data_tail = NULL
        FROM target AS t WHERE e.id = t.id;
    ELSIF TG_OP = 'DELETE' THEN
        IF NOT EXISTS (SELECT FROM old_images) THEN
            RETURN NULL;
        END IF;
        WITH target AS (
            SELECT e.id, left(image_doc(o), -1) || e.data_tail || '}' AS data
            FROM old_images AS o
            CROSS JOIN LATERAL (SELECT e.id FROM outbox AS e
                                WHERE outbox_subject(e.key, e.key_digest) = o.id COLLATE "default"
                                  AND e.data_tail IS NOT NULL
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
            SELECT e.id, left(image_doc(i), -1) || e.data_tail || '}' AS data
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
