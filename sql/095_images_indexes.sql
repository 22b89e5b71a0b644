-- Only the indexes on images that a query needs (docs/INDEXES.md: each query,
-- each List shape and the index that serves it). 13 -> 9 indexes; at 100,000
-- simulator images they were 183 MB, ~1.9 KB an image, more than the rows.
--
-- images_name_id (name, id): only the deletion check of a repository walk used it;
-- that query now names the registry too and reads images_registry_name.
DROP INDEX IF EXISTS images_name_id;
-- The descending twins of the name orders. Orders led by name have a
-- repository's images as ties; the ascending index, read backward, gives
-- name DESC with the second key reversed, and an Incremental Sort puts each
-- repository's rows in order (a sort of one repository, never of the scope):
-- name DESC (id ASC), name ASC + digest/createdAt DESC and name DESC + digest/
-- createdAt ASC. A repository scope reads its own orders straight from
-- images_registry_name(_digest|_created), forward or backward (name is constant
-- there, mirror/api/list_query.py).
DROP INDEX IF EXISTS images_registry_name_desc;
DROP INDEX IF EXISTS images_registry_name_digest_desc;
DROP INDEX IF EXISTS images_registry_name_created_desc;
