"""Page tokens of one database: the signing secret, and the keys row tokens name.

The secret lives in ``api_secrets`` (created by migration 020), so every API
process on one database signs and verifies the same tokens.

A sort key that does not fit a 100-character token (a long name together with
a digest, say) is not stored anywhere: the token carries the ids of the page's
last rows instead (as many as fit, the last row last) and the next request
re-reads the key of the last of them the index still holds. An image's name,
digest and createdAt never change, so a row's key is the same whenever it is
read. Resuming after an earlier row of the page when the last ones are gone
neither skips nor repeats an image that exists throughout (invariant 5): the
page held every image between those rows when it was read, so any image found
there now is new. When every row the token names is gone, the token is a clean
400 (``invalid pageToken: expired``) and the client lists again from the start.
Reading a page writes nothing, and waits on no write.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from mirror.api.list_query import sort_values
from mirror.api.page_tokens import PageTokenCodec, RowCursor, Value
from mirror.errors import InvalidArgument
from mirror.listing import SortKey

SECRET_NAME = "page_tokens"
GONE_MESSAGE = (
    "invalid pageToken: expired (the images that ended the previous page are gone; "
    "list again from the start)"
)

SELECT_SECRET = "SELECT secret FROM api_secrets WHERE name = $1"
# Every column a sort key can use (mirror.api.list_query.COLUMNS), by primary key: the
# token's last row first (one id: a generic plan, never planned again), the others
# only when it is gone (an array of ids is planned on every run, ~0.15 ms).
SELECT_ROW_KEY = "SELECT id, name, digest, created_ns FROM images WHERE id = $1"
SELECT_ROW_KEYS = "SELECT id, name, digest, created_ns FROM images WHERE id = ANY($1::text[])"


class PageKeys:
    """Encodes and decodes the page tokens of one database (inline, or naming rows when long)."""

    def __init__(self, secret: bytes) -> None:
        self.codec = PageTokenCodec(secret)

    @classmethod
    async def load(cls, conn: asyncpg.Connection) -> PageKeys:
        secret = await conn.fetchval(SELECT_SECRET, SECRET_NAME)
        if secret is None:
            raise RuntimeError("api_secrets has no page-token secret: are the migrations applied?")
        return cls(bytes(secret))

    def encode(self, fingerprint: bytes, key: Sequence[Value], page_ids: Sequence[str]) -> str:
        """The token for the page after ``key``, the key of the last of ``page_ids``.

        ``page_ids`` are the page's image ids in page order (its last rows suffice).
        """
        token = self.codec.encode(fingerprint, key)
        if token is not None:
            return token
        return self.codec.encode_rows(fingerprint, page_ids)

    async def decode(
        self,
        conn: asyncpg.Connection,
        token: str,
        fingerprint: bytes,
        order: Sequence[SortKey] = (),
    ) -> tuple[Value, ...]:
        """The key a token carries, in ``order`` (then id); ``InvalidArgument`` when it is not
        valid for this listing, or names only rows the index no longer holds."""
        decoded = self.codec.decode(token, fingerprint)
        if not isinstance(decoded, RowCursor):
            return decoded
        last = await conn.fetchrow(SELECT_ROW_KEY, decoded.ids[-1])
        if last is not None:
            return tuple(sort_values(order, last))
        earlier = decoded.ids[:-1]
        found = await conn.fetch(SELECT_ROW_KEYS, list(earlier)) if earlier else []
        rows = {row["id"]: row for row in found}
        for image_id in reversed(earlier):
            row = rows.get(image_id)
            if row is not None:
                return tuple(sort_values(order, row))
        raise InvalidArgument(GONE_MESSAGE)
