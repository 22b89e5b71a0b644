-- Marking a batch sent rewrites its rows (sent_at is indexed, so no HOT update).
-- Keep the event's JSON out of line: the rewrite then copies a ~100-byte row and
-- the TOAST pointer, not the whole image JSON (the relay's mark-sent UPDATE runs
-- 2-3x faster; inserts cost about the same). Applies to rows written from now on.
ALTER TABLE outbox ALTER COLUMN data SET STORAGE EXTERNAL;
ALTER TABLE outbox SET (toast_tuple_target = 128);
