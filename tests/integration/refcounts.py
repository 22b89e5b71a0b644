"""The invariant behind ``blobs.ref_count``: it counts the blob references of images.

Images hold their blob references as arrays (sql/090); a digest's count is how
many entries of ``images.blob_digests`` carry it (an image that lists a layer
twice counts twice). A digest no image references keeps its row at 0.
"""

from __future__ import annotations

import asyncpg

# blobs rows whose ref_count differs from the references, and references without a row
REF_COUNT_MISMATCHES = """
SELECT count(*)
FROM blobs AS b
FULL JOIN (SELECT d, count(*) AS n FROM images AS i, unnest(i.blob_digests) AS d GROUP BY d) AS r
    ON r.d = b.digest
WHERE coalesce(b.ref_count, -1) <> coalesce(r.n, 0)
"""

# How many blob references the index holds (what image_blobs rows were).
BLOB_REFERENCES = "SELECT coalesce(sum(cardinality(blob_digests)), 0) FROM images"


async def ref_count_mismatches(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    return int(await conn.fetchval(REF_COUNT_MISMATCHES))
