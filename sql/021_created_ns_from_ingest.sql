-- created_ns was a stored generated column: evaluating mirror_rfc3339_ns for each
-- inserted row cost ~21 µs, a third of inserting an image. The ingest now supplies
-- it, computed by mirror.listing.created_at_ns (the definition the API's page
-- tokens already use), so it becomes a plain column. Existing values are kept;
-- mirror_rfc3339_ns stays for anyone writing images by hand.
ALTER TABLE images ALTER COLUMN created_ns DROP EXPRESSION;
