-- images.tags went (issue 15, the index's footprint; docs/INDEXES.md): a copy of the
-- "tags" of the image's JSON, ~34 bytes an image, read only by the stats' lineage
-- queries (mirror/stats/queries.py), which now read the JSON's. The tags a List or
-- an event needs were always the JSON's, and the `tags` table keeps who holds each.
-- Dropping a column rewrites nothing: a row keeps its bytes until it is next written.
ALTER TABLE images DROP COLUMN tags;
