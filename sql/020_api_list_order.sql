-- The local API's List: the upstream's order, served by keyset scans.
--
-- 1. Text sorts by code point, as the upstream (and mirror.listing) does, whatever
--    the database's default collation: the columns that List sorts or ranges on
--    get the "C" collation (their indexes are rebuilt; equality is unchanged).
ALTER TABLE images
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN name TYPE text COLLATE "C",
    ALTER COLUMN registry_id TYPE text COLLATE "C",
    ALTER COLUMN digest TYPE text COLLATE "C";

-- 2. createdAt sorts by its exact instant in nanoseconds (mirror.listing.created_at_ns:
--    text order is wrong, timestamptz keeps only microseconds); no createdAt sorts as 0.
--    The fraction is cut off before the cast, which would round it.
CREATE FUNCTION mirror_rfc3339_fraction(ts text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT split_part(split_part(split_part(split_part(split_part(ts, '.', 2), 'Z', 1), 'z', 1), '+', 1), '-', 1)
$$;

-- IMMUTABLE although it casts to timestamptz: an RFC 3339 text carries its own
-- offset, so neither TimeZone nor DateStyle changes the result. Out-of-range
-- instants clamp to the bigint range.
CREATE FUNCTION mirror_rfc3339_ns(ts text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN coalesce(ts, '') = '' THEN 0 ELSE
        least(greatest(
            extract(epoch FROM replace(ts, '.' || mirror_rfc3339_fraction(ts), '')::timestamptz)
                * 1000000000
            + rpad(mirror_rfc3339_fraction(ts), 9, '0')::numeric,
            -9223372036854775808), 9223372036854775807)::bigint
    END
$$;

ALTER TABLE images
    ADD COLUMN created_ns bigint NOT NULL
    GENERATED ALWAYS AS (mirror_rfc3339_ns(doc ->> 'createdAt')) STORED;

-- 3. One index per sort order a registry-scoped List can ask for; the order is
--    always completed by id ASC. A repository scope is (registry_id, name) and
--    uses the name indexes; a folder scope merges its registries' scans (see
--    mirror/api/list_query.py) and finds them through images_folder_registry.
--    Orders that start with digest or created_at need one index each: their ties
--    are rare, so the tail of the order is an incremental sort over a few rows,
--    and a backward scan serves the descending order. Orders that start with
--    name have large ties (a repository's images): each direction of the second
--    field gets its index. Queries order by the (constant) registry_id first, in
--    the direction of their first key, hence registry_id DESC where name DESC
--    is read forward.
CREATE INDEX images_registry_digest ON images (registry_id, digest, id);
CREATE INDEX images_registry_created ON images (registry_id, created_ns, id);
CREATE INDEX images_registry_name ON images (registry_id, name, id);
CREATE INDEX images_registry_name_desc ON images (registry_id DESC, name DESC, id);
CREATE INDEX images_registry_name_digest ON images (registry_id, name, digest, id);
CREATE INDEX images_registry_name_digest_desc ON images (registry_id, name, digest DESC, id);
CREATE INDEX images_registry_name_created ON images (registry_id, name, created_ns, id);
CREATE INDEX images_registry_name_created_desc ON images (registry_id, name, created_ns DESC, id);
CREATE INDEX images_folder_registry ON images (folder_id, registry_id) WHERE folder_id IS NOT NULL;

-- 4. The secret that signs page tokens, shared by every API process on this database.
CREATE TABLE api_secrets (
    name       text PRIMARY KEY,
    secret     bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO api_secrets (name, secret)
VALUES ('page_tokens', uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));

-- 5. Sort keys too long for a 100-character token, kept server-side under a
--    handle. Losing them (crash, expiry) only turns a token into a clean 400.
CREATE UNLOGGED TABLE api_page_keys (
    handle     bytea PRIMARY KEY,
    key        bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_page_keys_created_at ON api_page_keys (created_at);

-- 6. Delete operations still to follow (the API's background poller reads these).
CREATE INDEX operations_pending ON operations (created_at) WHERE NOT applied;
