-- A tag row names its repository by a 4-byte number and takes its digest from the
-- image (issue 15, the index's footprint; docs/INDEXES.md, "Tags").
--
-- A row of tags (~1.1 an image at the simulator's) spelt its repository's name out,
-- ~37 bytes, in the row and again in the primary key, and held the tagged image's
-- digest (32 bytes since sql/108), which the image's own row has: the tag writers
-- (mirror/ingest/tags.py) claim a tag for an image they have just written.
--
-- tag_repositories keeps each name once. Only the tag writers write it, under the
-- outbox's transaction lock that they already hold for every tag row (a name is
-- numbered by the statement that first writes one of its tags), so no writer waits
-- on another for a number; the stats fold has its own numbering (stats_repositories,
-- sql/114), written by the folder alone. A number is never reused nor renumbered.
--
-- tags.digest is now NULL unless the image's row does not give the row's digest
-- (no such image, or another digest): readers take coalesce(the row's, the image's).
-- Nothing is lost; in a mirror kept by this project's writers the column is all NULL.
CREATE TABLE tag_repositories (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE
);

INSERT INTO tag_repositories (name)
SELECT DISTINCT repository FROM tags ORDER BY 1;

-- Written anew (an UPDATE would leave every row's old version behind), its columns in
-- an order that wastes no alignment.
CREATE TABLE tags_new (
    repository_id integer NOT NULL,
    tag text NOT NULL,
    image_id text NOT NULL,
    digest bytea,
    released_at timestamptz,
    PRIMARY KEY (repository_id, tag)
);
INSERT INTO tags_new (repository_id, tag, image_id, digest, released_at)
SELECT p.id, t.tag, t.image_id,
       CASE WHEN mirror_digest_text(t.digest)
                 IS DISTINCT FROM (SELECT i.digest FROM images i WHERE i.id = t.image_id)
            THEN t.digest END,
       t.released_at
FROM tags t JOIN tag_repositories p ON p.name = t.repository
ORDER BY p.id, t.tag;

DROP TABLE tags;
ALTER TABLE tags_new RENAME TO tags;
ALTER INDEX tags_new_pkey RENAME TO tags_pkey;
CREATE INDEX tags_image_id ON tags (image_id);
CREATE INDEX tags_released ON tags (image_id) WHERE released_at IS NOT NULL;
ANALYZE tags, tag_repositories;
