-- The relay records how far it has sent, not a mark on every row (docs/INDEXES.md,
-- "The outbox").
--
-- Before, marking a batch sent rewrote each of its rows (sent_at is indexed, so no
-- HOT update): after a first mirror the relay wrote every event a second time, and
-- the outbox's heap ended about twice the size of its rows (1.34 -> 2.63 KB an
-- image at 100,000 images), with two more indexes (outbox_unsent, outbox_sent_at).
--
-- Writers append in commit order (mirror/store/outbox.py, OUTBOX_LOCK_KEY) and the
-- relay sends in id order, so the sent events are always the ids up to a point.
-- outbox_sent keeps that point and when it was reached, one row a minute of
-- sending at most (mirror/events/pending.py, MARK_SENT): an event was sent at the
-- sent_at of the first row whose up_to covers it. Retention deletes the events
-- covered by rows older than MIRROR_EVENTS_RETENTION, then those rows, never the
-- newest (it is the point).
CREATE TABLE outbox_sent (
    up_to   bigint PRIMARY KEY,
    sent_at timestamptz NOT NULL
);

-- The existing marks, one row per marking statement (its rows share one now()).
-- Only below the first unsent row: were anything marked above it, it is sent
-- again (same ce_id), never skipped.
INSERT INTO outbox_sent (up_to, sent_at)
SELECT max(id), sent_at
FROM outbox
WHERE sent_at IS NOT NULL
  AND id < coalesce((SELECT min(id) FROM outbox WHERE sent_at IS NULL), 9223372036854775807)
GROUP BY sent_at;

-- Every reader of payloads selects outbox_events (sql/100, 101): the same columns,
-- sent_at now derived (NULL: not sent yet).
CREATE OR REPLACE VIEW outbox_events AS
SELECT o.id, o.event_id, o.topic, o.key, o.type, o.source, o.time,
       (SELECT s.sent_at FROM outbox_sent AS s WHERE s.up_to >= o.id
        ORDER BY s.up_to LIMIT 1) AS sent_at,
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

-- Its indexes (outbox_unsent, outbox_sent_at) go with it.
ALTER TABLE outbox DROP COLUMN sent_at;
