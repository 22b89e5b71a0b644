-- An image's JSON without the digests its row already holds (issue 15, the index's
-- footprint; docs/INDEXES.md, "The image's JSON").
--
-- The doc (the upstream's JSON as the ingest serialised it, ~1,360 bytes an image at
-- the simulator's 9.4 blobs) spelt out every digest in hex: the image's own (also in
-- `digest`) and each blob's (also in `blob_digests`, as 32 bytes), ~630 bytes of it.
-- A row now stores `doc_template` instead: the same text with each such 64-digit hex
-- value, and each of three JSON fragments every blob repeats (~250 bytes more), as a
-- "%N$s" placeholder and every other "%" doubled (mirror/model.py, doc_template),
-- which format() fills back, byte for byte. The fragments are part of every stored
-- template: they never change (a new list would need a new column).
--
-- Rows written before keep `doc` (exactly one of the two is set); readers in SQL take
-- `image_doc(images)`, whichever the row holds; the API reads the parts and fills the
-- template itself, in C (mirror/api/image_list.py, row_json). A row gets a template when the ingest
-- next writes it. A row's JSON is then made of `doc_template`, `digest` and
-- `blob_digests` together: whatever changes one of them writes all three (the ingest's
-- upsert does), and the outbox's triggers compare image_doc before and after.
ALTER TABLE images
    ALTER COLUMN doc DROP NOT NULL,
    ADD COLUMN doc_template text,
    ADD CONSTRAINT images_doc_or_template CHECK ((doc IS NULL) <> (doc_template IS NULL));

-- The image's JSON text, from the columns it is made of, or from the row (what the
-- SQL readers call). The values are those of mirror/model.py's doc_template_values:
-- the three fragments, the image digest without its "sha256:" prefix, then the hex of
-- each blob key. The API fills templates itself (mirror/_image_wire.c, fill).
CREATE FUNCTION image_doc(doc json, doc_template text, digest text, blob_digests bytea[])
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
RETURN coalesce(
    doc::text,
    format(doc_template,
           VARIADIC ARRAY['","digest":"sha256:', '"},{"id":"', '","size":"', substr(digest, 8)]
                    || ARRAY(SELECT encode(k, 'hex') FROM unnest(blob_digests) AS k)));

CREATE FUNCTION image_doc(i images) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
RETURN image_doc(i.doc, i.doc_template, i.digest, i.blob_digests);

-- The view every reader of payloads selects (sql/103), a registry.image.created
-- payload now built from image_doc.
CREATE OR REPLACE VIEW outbox_events AS
SELECT o.id, o.event_id, o.topic, o.key, o.type, o.source, o.time,
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
