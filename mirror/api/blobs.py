"""``GET /mirror/v1/blobs/{digest}``: one blob by digest, and the images that contain it.

The answer carries the blob's size and reference count (blob references of
images: an image that holds the same layer twice counts twice, as the registry's
own reference count does), the repositories that reference it (from the stats
aggregates: the first ``REPOSITORIES_SHOWN`` by name, and how many in all), and
one page of the images that contain it, by id, with the same signed keyset
tokens as List (``pageSize`` 1-1000, default 100).

The index keeps digests as 32-byte keys (sql/090, 091): the path's digest is turned
into its key here, and back for the answer. The images that hold a blob are
found through the GIN index over the CRC-32C hashes of ``images.blob_digests``
(sql/112), each checked against the array itself (``HOLDS_BLOB``).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from mirror.api.appkeys import PAGE_KEYS, POOL
from mirror.api.image_list import page_body, row_json
from mirror.api.jsonbody import raw_json_response
from mirror.api.list_query import IMAGE_PARTS
from mirror.api.page_tokens import query_fingerprint
from mirror.api.query_params import single_value
from mirror.errors import InvalidArgument, NotFound
from mirror.events.envelope import format_time as rfc3339
from mirror.listing import PAGE_TOKEN_MAX_LEN, parse_page_size
from mirror.model import digest_key, digest_text
from mirror.stats.queries import digest_repositories

BLOB_PATH = "/mirror/v1/blobs/{digest}"
REPOSITORIES_SHOWN = 100
DIGEST_MAX_LEN = 200
# The OCI digest grammar: algorithm ":" encoded.
DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")

SELECT_BLOB = "SELECT digest, size, ref_count, first_seen, orphaned_at FROM blobs WHERE digest = $1"
# The stats aggregates keep the repositories of every digest once the stats folder
# has folded it (mirror/stats/folder.py); a digest not folded yet has none there,
# and a few references are cheap to follow instead.
SELECT_REPOSITORIES = f"SELECT {digest_repositories('$1', '$2')}"
# The images i that hold the blob whose key is $1. The GIN index (images_blob_hashes,
# sql/112) is over the hashes of the digests, which two digests may share: the array
# decides. The check is wrapped in coalesce so that the planner does not count its
# selectivity a second time (the hash's, from the index expression's statistics,
# is that of the digest already): counted twice, a digest in 5 % of the images was
# taken for one in 0.25 % and read through the index and sorted, not along the
# primary key. (An image without blobs has a NULL array: coalesce says no.)
HOLDS_BLOB = """
mirror_blob_hashes(i.blob_digests) @> ARRAY[crc32c($1::bytea)]
AND coalesce(i.blob_digests @> ARRAY[$1::bytea], false)
"""
SELECT_FEW_REFS_REPOSITORIES = f"""
SELECT (SELECT count(DISTINCT i.name) FROM images AS i WHERE {HOLDS_BLOB}) AS repository_count,
       ARRAY(SELECT DISTINCT i.name::text FROM images AS i
             WHERE {HOLDS_BLOB} ORDER BY 1 LIMIT $2) AS repositories
"""
FEW_REFS = 100
# A rare digest: the GIN index finds its images, then a sort by id; a common one: the
# planner walks the primary key in id order and checks each image's array (it knows
# common digests from the statistics of the index's expression).
SELECT_IMAGES = f"""
SELECT i.id, i.name, i.digest, {IMAGE_PARTS}
FROM images AS i
WHERE {HOLDS_BLOB} AND i.id > $2
ORDER BY i.id
LIMIT $3
"""


async def get_blob(request: web.Request) -> web.Response:
    digest = request.match_info["digest"]
    if len(digest) > DIGEST_MAX_LEN or not DIGEST_RE.fullmatch(digest):
        raise InvalidArgument(f"invalid digest: {digest[:80]!r} is not algorithm:hex")
    page_size = parse_page_size(single_value(request, "pageSize"))
    page_token = single_value(request, "pageToken")
    if len(page_token) > PAGE_TOKEN_MAX_LEN:
        raise InvalidArgument(f"invalid pageToken: longer than {PAGE_TOKEN_MAX_LEN} characters")
    page_keys = request.app[PAGE_KEYS]
    fingerprint = query_fingerprint("blob", digest)
    key = digest_key(digest)
    async with request.app[POOL].acquire() as conn:
        after = ""
        if page_token:
            last = await page_keys.decode(conn, page_token, fingerprint)
            if len(last) != 1 or not isinstance(last[0], str):
                raise InvalidArgument("invalid pageToken: malformed")
            after = last[0]
        blob = await conn.fetchrow(SELECT_BLOB, key)
        if blob is None:
            raise NotFound(f"Blob {digest} not found")
        repositories = await conn.fetchrow(SELECT_REPOSITORIES, key, REPOSITORIES_SHOWN)
        if repositories["repository_count"] == 0 and 0 < blob["ref_count"] <= FEW_REFS:
            repositories = await conn.fetchrow(
                SELECT_FEW_REFS_REPOSITORIES, key, REPOSITORIES_SHOWN
            )
        rows = await conn.fetch(SELECT_IMAGES, key, after, page_size + 1)
        token = ""
        if len(rows) > page_size:
            rows = rows[:page_size]
            token = page_keys.encode(fingerprint, [rows[-1]["id"]], [rows[-1]["id"]])
    head: dict[str, Any] = {"digest": digest_text(blob["digest"]), "size": str(blob["size"])}
    head["refCount"] = str(blob["ref_count"])
    head["firstSeen"] = rfc3339(blob["first_seen"])
    if blob["orphaned_at"] is not None:
        head["orphanedAt"] = rfc3339(blob["orphaned_at"])
    if repositories["repositories"]:
        head["repositories"] = list(repositories["repositories"])
    head["repositoryCount"] = str(repositories["repository_count"])
    # {head..., "images": [...], "nextPageToken": ...}: the page part is List's own.
    page = page_body([row_json(row) for row in rows], token)
    body = orjson.dumps(head)
    if len(page) > 2:
        body = body[:-1] + b"," + page[1:]
    return raw_json_response(body)


def add_blob_routes(app: web.Application) -> None:
    app.router.add_get(BLOB_PATH, get_blob, name="mirror:blob")
