"""Keyset page tokens: the last row's sort key and id, compact, signed, URL-safe.

A token is ``base64url(version || payload || mac)`` without padding, where

* ``payload`` is, for an inline token (version 1), the values of the last row's
  sort key, in sort order, id last; for a row token (version 3), the ids of the
  page's last rows, oldest first, as many as fit. Each value is a tag byte and
  its bytes: ``None``; a string with a varint length, as UTF-8 or, when it uses
  only the 40 characters of ids and repository names, three characters to two
  bytes; a ``sha256:`` digest as its 32 raw bytes; a signed 64-bit integer;
* ``mac`` is HMAC-SHA256 over ``query fingerprint || version || payload``,
  truncated to 8 bytes. The fingerprint is not stored: a token presented with
  another scope, filter or order fails its MAC like a forged one.

Anything that does not decode and verify is ``InvalidArgument`` (400): a
forged, truncated or stale-format token never reaches the database. Tokens
stay within the upstream's 100-character limit: ``encode`` returns ``None``
when a key is too long to fit, and the caller issues a row token instead,
whose key the server re-reads from the index by id (``page_keys``). Nothing
is stored to issue either kind: reading a page writes nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from mirror.errors import InvalidArgument

MAX_TOKEN_CHARS = 100
MAC_BYTES = 8
VERSION_INLINE = 1
# Version 2 named a key stored server-side (api_page_keys, dropped by migration 060).
VERSION_RETIRED_STORED = 2
VERSION_ROWS = 3

Value = str | int | None

_TAG_NONE = 0
_TAG_STR = 1
_TAG_SHA256 = 2
_TAG_INT = 3
_TAG_BASE40 = 4
# Cloud ids and repository names use only these 40 characters: three fit in two bytes.
_BASE40 = "abcdefghijklmnopqrstuvwxyz0123456789._/-"
_BASE40_INDEX = {c: i for i, c in enumerate(_BASE40)}
_SHA256_RE = re.compile(r"sha256:[0-9a-f]{64}")
_INT64 = struct.Struct(">q")
# base64 of 75 bytes is exactly 100 characters.
_MAX_RAW_BYTES = MAX_TOKEN_CHARS * 3 // 4

INVALID_TOKEN_MESSAGE = "invalid pageToken: malformed"
RETIRED_TOKEN_MESSAGE = "invalid pageToken: expired"
FOREIGN_TOKEN_MESSAGE = "invalid pageToken: not issued for this listing (scope, filter or orderBy differ, or it was altered)"


@dataclass(frozen=True, slots=True)
class RowCursor:
    """A row token's content: the ids of the page's last rows, in page order (last row last)."""

    ids: tuple[str, ...]


class PageTokenCodec:
    """Signs and verifies page tokens with one secret shared by every API process."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the page-token secret must hold at least 16 bytes")
        self._secret = secret

    def encode(self, fingerprint: bytes, values: Sequence[Value]) -> str | None:
        """The token for a key, or ``None`` when the key is too long for an inline token."""
        body = bytes([VERSION_INLINE]) + _pack(values)
        if len(body) + MAC_BYTES > _MAX_RAW_BYTES:
            return None
        return _b64(body + self._mac(fingerprint, body))

    def encode_rows(self, fingerprint: bytes, ids: Sequence[str]) -> str:
        """A row token: the last of ``ids`` (a page's ids, in page order), as many as fit."""
        packed: list[bytes] = []
        room = _MAX_RAW_BYTES - 1 - MAC_BYTES
        for image_id in reversed(ids):
            value = _pack([image_id])
            if len(value) > room:
                break
            packed.append(value)
            room -= len(value)
        if not packed:
            raise ValueError("a row token needs an id that fits a token")
        body = bytes([VERSION_ROWS]) + b"".join(reversed(packed))
        return _b64(body + self._mac(fingerprint, body))

    def decode(self, token: str, fingerprint: bytes) -> tuple[Value, ...] | RowCursor:
        """The key values of an inline token, or the row ids of a row token.

        Raises ``InvalidArgument`` for anything that is not a token this
        service signed for this very query.
        """
        raw = _unb64(token)
        if len(raw) < 1 + MAC_BYTES:
            raise InvalidArgument(INVALID_TOKEN_MESSAGE)
        body, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(fingerprint, body)):
            raise InvalidArgument(FOREIGN_TOKEN_MESSAGE)
        version, payload = body[0], body[1:]
        if version == VERSION_INLINE:
            return _unpack(payload)
        if version == VERSION_ROWS:
            ids = _unpack(payload)
            if not ids or not all(isinstance(value, str) for value in ids):
                raise InvalidArgument(INVALID_TOKEN_MESSAGE)
            return RowCursor(tuple(str(value) for value in ids))
        if version == VERSION_RETIRED_STORED:
            raise InvalidArgument(RETIRED_TOKEN_MESSAGE)
        raise InvalidArgument(INVALID_TOKEN_MESSAGE)

    def _mac(self, fingerprint: bytes, body: bytes) -> bytes:
        # hmac.digest: the one-shot C path (~30 % less time than hmac.new(...).digest()).
        return hmac.digest(self._secret, fingerprint + body, "sha256")[:MAC_BYTES]


def query_fingerprint(*parts: str) -> bytes:
    """A digest of what a token is bound to (scope, filter, order), unambiguous in its parts."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = part.encode()
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.digest()


def pack_key(values: Sequence[Value]) -> bytes:
    """The payload encoding of a key."""
    return _pack(values)


def unpack_key(payload: bytes) -> tuple[Value, ...]:
    return _unpack(payload)


def _pack(values: Sequence[Value]) -> bytes:
    out = bytearray()
    for value in values:
        if value is None:
            out.append(_TAG_NONE)
        elif isinstance(value, bool):
            raise TypeError("page-token values are str, int or None")
        elif isinstance(value, int):
            out.append(_TAG_INT)
            out += _INT64.pack(value)
        elif _SHA256_RE.fullmatch(value):
            out.append(_TAG_SHA256)
            out += bytes.fromhex(value[7:])
        elif len(value) >= 3 and all(c in _BASE40_INDEX for c in value):
            out.append(_TAG_BASE40)
            out += _varint(len(value))
            out += _pack_base40(value)
        else:
            data = value.encode()
            out.append(_TAG_STR)
            out += _varint(len(data))
            out += data
    return bytes(out)


def _pack_base40(text: str) -> bytes:
    out = bytearray()
    for i in range(0, len(text), 3):
        group = [_BASE40_INDEX[c] for c in text[i : i + 3]] + [0, 0]
        out += (group[0] * 1600 + group[1] * 40 + group[2]).to_bytes(2, "big")
    return bytes(out)


def _unpack_base40(data: bytes, length: int) -> str:
    chars: list[str] = []
    for i in range(0, len(data), 2):
        number = int.from_bytes(data[i : i + 2], "big")
        if number >= 64000:
            raise InvalidArgument(INVALID_TOKEN_MESSAGE)
        chars += (_BASE40[number // 1600], _BASE40[number // 40 % 40], _BASE40[number % 40])
    return "".join(chars[:length])


def _unpack(payload: bytes) -> tuple[Value, ...]:
    values: list[Value] = []
    pos = 0
    try:
        while pos < len(payload):
            tag = payload[pos]
            pos += 1
            if tag == _TAG_NONE:
                values.append(None)
            elif tag == _TAG_INT:
                (number,) = _INT64.unpack_from(payload, pos)
                values.append(number)
                pos += _INT64.size
            elif tag == _TAG_SHA256:
                if pos + 32 > len(payload):
                    raise InvalidArgument(INVALID_TOKEN_MESSAGE)
                values.append("sha256:" + payload[pos : pos + 32].hex())
                pos += 32
            elif tag == _TAG_BASE40:
                length, pos = _read_varint(payload, pos)
                size = (length + 2) // 3 * 2
                if pos + size > len(payload):
                    raise InvalidArgument(INVALID_TOKEN_MESSAGE)
                values.append(_unpack_base40(payload[pos : pos + size], length))
                pos += size
            elif tag == _TAG_STR:
                length, pos = _read_varint(payload, pos)
                if pos + length > len(payload):
                    raise InvalidArgument(INVALID_TOKEN_MESSAGE)
                values.append(payload[pos : pos + length].decode())
                pos += length
            else:
                raise InvalidArgument(INVALID_TOKEN_MESSAGE)
    except (struct.error, UnicodeDecodeError, IndexError):
        raise InvalidArgument(INVALID_TOKEN_MESSAGE) from None
    return tuple(values)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 28:
            raise InvalidArgument(INVALID_TOKEN_MESSAGE)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(token: str) -> bytes:
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise InvalidArgument(INVALID_TOKEN_MESSAGE)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise InvalidArgument(INVALID_TOKEN_MESSAGE) from None
    # The decoder skips stray characters and ignores spare bits: only the
    # canonical spelling of a token is accepted.
    if _b64(raw) != token:
        raise InvalidArgument(INVALID_TOKEN_MESSAGE)
    return raw
