-- An image's template without its blobs' objects (issue 15, the index's footprint;
-- docs/INDEXES.md, "The image's JSON").
--
-- A template of sql/104 still spelt out, for every blob, its id and size around three
-- placeholders (the fragments) and its key's: `{"id":"<id>%1$s%6$s%3$s<size>"}`, ~44
-- bytes a blob, ~8.4 blobs an image at the simulator's. Its size is also in
-- `blob_sizes` and its digest in `blob_digests`. A template of the second kind holds
-- each blob's whole object as one placeholder (4-5 bytes), and the row keeps the ids in
-- `blob_ids` (joined by spaces, ~21 bytes a blob): value 6 + n is the n-th blob's
-- object made again from its id, key and size, `{"id":"…","digest":"sha256:…",
-- "size":"…"}`, as the ingest found it in the doc (mirror/model.py, image_template:
-- only when every blob's object is there, in order, else the first kind, `blob_ids` NULL).
-- Values 5 and 6 are the image's `id` and `name`, which the first kind spelt out too.
--
-- Rows written before keep their template of the first kind until the ingest next
-- writes them. A row's JSON is made of `doc_template`, `digest`, `blob_digests`,
-- `blob_sizes`, `blob_ids`, `id` and `name` together: whatever changes one of them
-- writes all (the ingest's upsert does).
ALTER TABLE images ADD COLUMN blob_ids text;

-- The image's JSON text from the columns it is made of (mirror/model.py,
-- doc_template_values; the API fills templates itself: mirror/_image_wire.c, fill).
CREATE FUNCTION image_doc(doc json, doc_template text, digest text, blob_digests bytea[],
                          blob_sizes bigint[], blob_ids text, image_id text, name text)
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
RETURN coalesce(
    doc::text,
    CASE WHEN blob_ids IS NULL
         THEN image_doc(NULL, doc_template, digest, blob_digests)
         ELSE format(doc_template,
                     VARIADIC ARRAY['","digest":"sha256:', '"},{"id":"', '","size":"', substr(digest, 8),
                                    image_id, name]
                              || ARRAY(SELECT '{"id":"' || u.blob_id || '","digest":"sha256:'
                                              || encode(u.key, 'hex') || '","size":"' || u.size
                                              || '"}'
                                       FROM unnest(blob_digests, blob_sizes,
                                                   string_to_array(blob_ids, ' '))
                                            WITH ORDINALITY AS u (key, size, blob_id, n)
                                       ORDER BY u.n))
    END);

CREATE OR REPLACE FUNCTION image_doc(i images) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
RETURN image_doc(i.doc, i.doc_template, i.digest, i.blob_digests, i.blob_sizes, i.blob_ids,
                 i.id, i.name);
