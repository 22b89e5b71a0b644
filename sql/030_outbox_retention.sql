-- The relay deletes sent events once they are older than MIRROR_EVENTS_RETENTION:
-- find them by sent_at without scanning the outbox. Unsent rows (the relay's
-- queue) are served by outbox_unsent from 001 and never match this index.
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;
