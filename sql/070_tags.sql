-- Tag events: which image each tag of a repository names, as the index knows it.
-- One row per (repository, tag). The ingest and the API's deletes keep it in the
-- transaction of the image change and write registry.tag.added / removed events
-- from its transitions (mirror/ingest/tags.py), so a tag move is reported once,
-- whatever the order in which a walk meets the two images.
--
-- released_at: the image stopped carrying the tag but no other image has claimed
-- it yet. A later page of the walk may show the image that took it (then one
-- registry.tag.added with previousImageId); when a complete walk of the scope
-- ends with the tag still unclaimed, registry.tag.removed (reason untagged).
CREATE TABLE tags (
    repository  text NOT NULL,             -- the image's name: <registryId>/<repository path>
    tag         text NOT NULL,
    image_id    text NOT NULL,
    digest      text NOT NULL,
    released_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repository, tag)
);
CREATE INDEX tags_image_id ON tags (image_id);
CREATE INDEX tags_released ON tags (image_id) WHERE released_at IS NOT NULL;

-- What the index holds today (no events: these tags are not changes). Should two
-- indexed images claim one tag (a stale index), the newer image wins.
INSERT INTO tags (repository, tag, image_id, digest)
SELECT DISTINCT ON (i.name, t.tag) i.name, t.tag, i.id, i.digest
FROM images AS i, unnest(i.tags) AS t (tag)
ORDER BY i.name, t.tag, i.created_at DESC NULLS LAST, i.id DESC;

ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_topic_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_topic_check CHECK (topic IN ('images', 'blobs', 'tags'));

-- The feed's filters (type prefixes, subject) read the outbox by id; subject
-- lookups get their own index.
CREATE INDEX outbox_key_id ON outbox (key, id);
