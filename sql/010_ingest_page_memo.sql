-- What each List page of a scope's last walk held (mirror/ingest/memo.py): per walk
-- key (scope and page size) and request page token, the SHA-256 of the answer's
-- body, the next page token it gave, and the ids and content hashes of its images
-- (and, for folder walks, the registries they belong to). A later walk that gets
-- the same bytes for the same request checks these against the index instead of
-- parsing the page. Only a cache: a row that no longer matches is rewritten.
CREATE TABLE ingest_page_memo (
    walk_key    text NOT NULL,
    page_token  text NOT NULL,
    body_hash   bytea NOT NULL,
    next_token  text NOT NULL,
    ids         text[] NOT NULL,
    hashes      bytea[] NOT NULL,
    registries  text[] NOT NULL,
    PRIMARY KEY (walk_key, page_token)
);
