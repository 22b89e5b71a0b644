-- The index's version, for the API's cache of List pages (mirror/api/page_cache.py).
--
-- A transaction that writes a row of images adds one to a slot as it commits,
-- so a snapshot sees the addition exactly when it sees the write. A later
-- snapshot sees a superset of the committed writes, and slots only grow: the
-- sum over the slots is the same in two snapshots exactly when no write to
-- images committed between them. Sixteen slots (a writer's by its backend's
-- pid) keep concurrent writers, such as the ingest's walks, from queueing on one
-- row.
--
-- The addition is a deferred trigger: it runs at COMMIT, after every other
-- statement of the transaction, so a writer holds its slot's row lock only
-- while it commits and never waits on another lock while holding it (a slot
-- taken mid-transaction could close a cycle with row locks on images). It fires
-- for each row but adds once a transaction (a transaction-local setting).
CREATE TABLE images_version (
    slot smallint PRIMARY KEY CHECK (slot BETWEEN 0 AND 15),
    n bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 20);  -- room on the page for HOT updates

INSERT INTO images_version (slot) SELECT generate_series(0, 15);

CREATE FUNCTION images_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_LEVEL = 'ROW' THEN
        IF current_setting('mirror.images_version_added', true) = 'on' THEN
            RETURN NULL;
        END IF;
        PERFORM set_config('mirror.images_version_added', 'on', true);
    END IF;
    UPDATE images_version SET n = n + 1 WHERE slot = pg_backend_pid() % 16;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER images_version_write AFTER INSERT OR UPDATE OR DELETE ON images
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION images_version_bump();
-- TRUNCATE has no row triggers; it holds the table's exclusive lock anyway.
CREATE TRIGGER images_version_truncate AFTER TRUNCATE ON images
    FOR EACH STATEMENT EXECUTE FUNCTION images_version_bump();
-- Also under session_replication_role = replica (a bulk load, a logical replica's
-- apply worker): every write that a reader could see moves the version.
ALTER TABLE images ENABLE ALWAYS TRIGGER images_version_write;
ALTER TABLE images ENABLE ALWAYS TRIGGER images_version_truncate;
