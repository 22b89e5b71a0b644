-- The hash index on the outbox's key (sql/096, the feed's subject lookups and the
-- write-out triggers of sql/100) with its buckets filled to 90% instead of the
-- default 75% before they split (docs/INDEXES.md, "The outbox"). The index grows
-- by doubling its buckets as events arrive; at the default fill a first mirror
-- left it at ~52 bytes an event, more than twice the primary key's ~23. Filled
-- to 90% (measured on the key sequence of a 20,000-image first mirror, written
-- in pages of 2,000 as the ingest writes them): 240 -> 147 bytes an image. The
-- lookups are the same (one bucket page, rarely an overflow page). Rebuilt here
-- so an existing outbox gets the new fill too.
ALTER INDEX outbox_key_hash SET (fillfactor = 90);
REINDEX INDEX outbox_key_hash;
