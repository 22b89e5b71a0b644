"""Page tokens' server-side state: the signing secret and the keys too long to inline.

The secret lives in ``api_secrets`` (created by migration 020), so every API
process on one database signs and verifies the same tokens. A sort key that
does not fit a 100-character token (a long name together with a digest, say)
is stored in ``api_page_keys`` under a handle derived from the key itself (the
same key always gets the same handle, so re-reading a page writes nothing new);
the token then carries the signed handle. Stored keys expire after
``KEY_LIFETIME``; an expired token is a clean 400.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from datetime import timedelta

import asyncpg

from mirror.api.page_tokens import (
    STORED_HANDLE_BYTES,
    PageTokenCodec,
    Value,
    pack_key,
    unpack_key,
)
from mirror.errors import InvalidArgument

KEY_LIFETIME = timedelta(days=7)
SECRET_NAME = "page_tokens"

SELECT_SECRET = "SELECT secret FROM api_secrets WHERE name = $1"
INSERT_KEY = """
INSERT INTO api_page_keys (handle, key) VALUES ($1, $2)
ON CONFLICT (handle) DO UPDATE SET created_at = now()
WHERE api_page_keys.created_at < now() - interval '1 day'
"""
SELECT_KEY = "SELECT key FROM api_page_keys WHERE handle = $1 AND created_at > now() - $2::interval"
DELETE_EXPIRED_KEYS = "DELETE FROM api_page_keys WHERE created_at < now() - $1::interval"


class PageKeys:
    """Encodes and decodes the page tokens of one database (inline, or stored when long)."""

    def __init__(self, secret: bytes) -> None:
        self.codec = PageTokenCodec(secret)
        self._handle_key = hmac.new(secret, b"api_page_keys", hashlib.sha256).digest()

    @classmethod
    async def load(cls, conn: asyncpg.Connection) -> PageKeys:
        secret = await conn.fetchval(SELECT_SECRET, SECRET_NAME)
        if secret is None:
            raise RuntimeError("api_secrets has no page-token secret: are the migrations applied?")
        return cls(bytes(secret))

    async def encode(
        self, conn: asyncpg.Connection, fingerprint: bytes, key: Sequence[Value]
    ) -> str:
        """The token for the page after ``key``."""
        token = self.codec.encode(fingerprint, key)
        if token is not None:
            return token
        payload = pack_key(key)
        handle = hmac.new(self._handle_key, fingerprint + payload, hashlib.sha256).digest()
        handle = handle[:STORED_HANDLE_BYTES]
        await conn.execute(INSERT_KEY, handle, payload)
        return self.codec.encode_handle(fingerprint, handle)

    async def decode(
        self, conn: asyncpg.Connection, token: str, fingerprint: bytes
    ) -> tuple[Value, ...]:
        """The key a token carries; ``InvalidArgument`` when it is not valid for this listing."""
        decoded = self.codec.decode(token, fingerprint)
        if not isinstance(decoded, bytes):
            return decoded
        payload = await conn.fetchval(SELECT_KEY, decoded, KEY_LIFETIME)
        if payload is None:
            raise InvalidArgument("invalid pageToken: expired")
        return unpack_key(bytes(payload))


async def delete_expired_keys(conn: asyncpg.Connection) -> int:
    status = await conn.execute(DELETE_EXPIRED_KEYS, KEY_LIFETIME)
    return int(status.split()[-1])
