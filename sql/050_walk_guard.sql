-- Deletion guard (mirror/ingest/deletions.py): why a walk was judged suspect (it
-- listed far fewer images than the index holds for its scope, or ended on an
-- empty page), in which case it deleted nothing and sent no confirmation Get;
-- and how many deletion candidates were left unchecked for the next pass (the
-- per-pass cap on confirmation Gets, or an abandoned check).
ALTER TABLE sync_runs ADD COLUMN suspect text;
ALTER TABLE sync_runs ADD COLUMN unchecked bigint NOT NULL DEFAULT 0;
