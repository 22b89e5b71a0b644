-- A lineage chain key of 4 bytes a layer instead of 8 (issue 15, the index's
-- footprint; docs/STATS.md, "Other details").
--
-- stats_images.chain holds one part per layer (the first 256): the first bytes of
-- the md5 of the layer's digest key, and the index stats_images_chain holds it
-- again; ~8.4 layers an image at the simulator's, ~67 bytes twice. Every
-- candidate a lineage lookup finds by its chain is checked against the real
-- digests (mirror/stats/queries.py, `ok`), so a part only has to keep unrelated
-- images apart most of the time: with 4 bytes, two different layers share a part
-- once in ~4 billion. The new part of a layer is the first 4 bytes of its old
-- one, so each key is cut down where it is, without reading the images; the table
-- is written anew (a column's type rewritten), compact, its index built again.
-- stats_chain_part itself (sql/routines/stats.sql) makes 4-byte parts from here on.
CREATE FUNCTION pg_temp.stats_chain_cut(chain bytea) RETURNS bytea
LANGUAGE sql IMMUTABLE
RETURN coalesce((SELECT string_agg(substring(chain FROM k * 8 + 1 FOR 4), ''::bytea ORDER BY k)
                 FROM generate_series(0, length(chain) / 8 - 1) AS k), ''::bytea);

ALTER TABLE stats_images ALTER COLUMN chain TYPE bytea USING pg_temp.stats_chain_cut(chain);
