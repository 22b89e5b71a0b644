-- The index: images, their blobs by digest, the outbox of change events,
-- and the state of each scope's walks.

-- One row per upstream image. `doc` is the upstream JSON of the image, byte for
-- byte as the local API serves it (json, not jsonb: key order and the exact
-- createdAt text, nanoseconds included, are kept).
CREATE TABLE images (
    id              text PRIMARY KEY,
    name            text NOT NULL,              -- <registryId>/<repository path>: the repository name
    registry_id     text NOT NULL,
    folder_id       text,                       -- known when walked through a folder scope
    digest          text NOT NULL,
    compressed_size bigint NOT NULL DEFAULT 0,
    created_at      timestamptz,
    tags            text[] NOT NULL DEFAULT '{}',
    doc             json NOT NULL,
    content_hash    bytea NOT NULL,             -- skip unchanged images without comparing docs
    indexed_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX images_registry_id ON images (registry_id, id);
CREATE INDEX images_folder_id ON images (folder_id, id) WHERE folder_id IS NOT NULL;
CREATE INDEX images_name_id ON images (name, id);

-- The blobs of each image: position 0 is the config, then the layers in order.
-- Dedup is by digest; blob_id differs per registry for the same digest.
CREATE TABLE image_blobs (
    image_id    text NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    registry_id text NOT NULL,                  -- the image's (immutable), kept here for per-registry aggregates
    position    smallint NOT NULL,
    kind        char(1) NOT NULL CHECK (kind IN ('c', 'l')),   -- config or layer
    digest      text NOT NULL,
    blob_id     text,
    size        bigint NOT NULL,
    PRIMARY KEY (image_id, position)
);
CREATE INDEX image_blobs_digest ON image_blobs (digest, image_id);

-- One row per digest ever seen. ref_count counts image_blobs rows with this
-- digest; 0 means orphaned (reclaimable).
CREATE TABLE blobs (
    digest      text PRIMARY KEY,
    size        bigint NOT NULL,
    ref_count   bigint NOT NULL DEFAULT 0,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    orphaned_at timestamptz
);
CREATE INDEX blobs_orphaned ON blobs (digest) WHERE ref_count = 0;

-- Registries and the folder each belongs to, learned from folder walks.
CREATE TABLE registries (
    registry_id text PRIMARY KEY,
    folder_id   text NOT NULL
);

-- Change events, written in the transaction of the change (see mirror/store/outbox.py:
-- writers take an advisory lock before inserting, so ids follow commit order).
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    event_id   uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,   -- the CloudEvent id, stable across replays
    topic      text NOT NULL CHECK (topic IN ('images', 'blobs')),
    key        text NOT NULL,                                    -- image id or blob digest; also ce_subject
    type       text NOT NULL,
    source     text NOT NULL,
    time       timestamptz NOT NULL DEFAULT now(),
    data       json NOT NULL,
    sent_at    timestamptz
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- Per scope: the state of its walks, for deletion detection and /mirror/v1/sync.
CREATE TABLE scopes (
    scope            text PRIMARY KEY,        -- folder:ID, registry:ID, repository:NAME
    generation       bigint NOT NULL DEFAULT 0,
    last_started_at  timestamptz,
    last_complete_at timestamptz,
    last_duration_s  double precision,
    last_images      bigint,
    last_error       text,
    last_error_at    timestamptz,
    lease_owner      text,
    lease_until      timestamptz
);

CREATE TABLE sync_runs (
    id          bigserial PRIMARY KEY,
    scope       text NOT NULL,
    generation  bigint NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    status      text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'complete', 'failed', 'cancelled')),
    pages       bigint NOT NULL DEFAULT 0,
    images      bigint NOT NULL DEFAULT 0,
    created     bigint NOT NULL DEFAULT 0,
    updated     bigint NOT NULL DEFAULT 0,
    deleted     bigint NOT NULL DEFAULT 0,
    anomalies   bigint NOT NULL DEFAULT 0,
    error       text
);
CREATE INDEX sync_runs_scope ON sync_runs (scope, id DESC);

-- Delete operations passed to the upstream through the local API.
CREATE TABLE operations (
    id           text PRIMARY KEY,            -- the upstream operation id
    image_id     text NOT NULL,
    doc          json NOT NULL,               -- the last Operation JSON seen
    done         boolean NOT NULL DEFAULT false,
    applied      boolean NOT NULL DEFAULT false,  -- the image left the index and its event was written
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
