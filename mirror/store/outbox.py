"""Writing change events to the outbox, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import asyncpg
import orjson

from mirror.model import SHA256_KEY_BYTES, Event, EventType, digest_key

# Outbox writers serialise on this transaction-level lock, taken just before
# their inserts: ids are then drawn in commit order, so a reader following
# `id > cursor` (the events feed, the relay) can never miss a row that commits
# later with a smaller id.
OUTBOX_LOCK_KEY = 0x6D69_7272_6F72_0002

LOCK_OUTBOX = "SELECT pg_advisory_xact_lock($1)"
# A row stores the type's code and, for the mirror's own writers, the source's code;
# type, topic and source are generated columns that map them back (sql/096: the
# same lists in the same order; a type is added at the end, there and here).
TYPE_CODES = (
    EventType.IMAGE_CREATED,
    EventType.IMAGE_UPDATED,
    EventType.IMAGE_DELETED,
    EventType.BLOB_ADDED,
    EventType.BLOB_ORPHANED,
    EventType.TAG_ADDED,
    EventType.TAG_REMOVED,
)
SOURCE_CODES = ("/registry-mirror/ingest", "/registry-mirror/api")
# The one type whose payload can be derived from its subject's row (sql/100).
DERIVED_TYPE_CODE = TYPE_CODES.index(EventType.IMAGE_CREATED) + 1
# The types keyed by a blob's digest (sql/107: such a key may be stored as bytes).
_BLOB_TYPES = (EventType.BLOB_ADDED, EventType.BLOB_ORPHANED)
_BLOB_TYPE_CODES = ", ".join(str(TYPE_CODES.index(t) + 1) for t in _BLOB_TYPES)
# The types whose payload names a digest that may be stored as bytes (sql/117).
_TAG_TYPES = (EventType.TAG_ADDED, EventType.TAG_REMOVED)
_TAG_TYPE_CODES = ", ".join(str(TYPE_CODES.index(t) + 1) for t in _TAG_TYPES)


def _array(values: Iterable[str]) -> str:
    """A text[] literal of known, quote-free values."""
    return "ARRAY[" + ", ".join(f"'{v}'" for v in values) + "]::text[]"


# The payloads go as text[] and become json in the statement: a json[] parameter
# would take the pool's text-format json codec, and asyncpg would send the whole
# array as one quoted, escaped literal for the server to parse back.
#
# Some payloads are stored as a tail only (data NULL), each only when the reader's
# reconstruction is the payload byte for byte:
# * registry.image.created: the image's doc with the tail before its last brace (the
#   origin, e.g. ',"runId":"N"'); sql/100: outbox_events derives it, and the images
#   triggers write it out before the doc changes or goes. Proven one of two ways:
#   - by the writer, for an image it inserted in this transaction (``inserted``: the
#     doc's bytes as it wrote them): the tail comes as $5, and nobody else can change
#     the row before we commit;
#   - here (the d join's WHERE), against the image's doc as this transaction sees
#     it, the row share-locked so that nobody changes it before we commit;
# * blob and tag events: outbox_key_prefix(type, key) (sql/101: '{"digest":"<key>"'
#   or '{"repository":"<r>","tag":"<t>"'), then the tail; nothing to write out later.
#
# A blob event's key of the form "sha256:" and 64 lowercase hex digits is stored as
# its 32 bytes (key_digest, key NULL; sql/107), when the statement finds that
# encoding them again (outbox_subject) gives the key byte for byte; any other key is
# stored as text. The bytes come from here ($6, ``digest_key``): in PostgreSQL a
# regular expression that picks out such keys cost ~7 µs a key.
#
# A tag event's tail (after its key's prefix) names the tagged image's digest: when
# that is such a digest, the row keeps its 32 bytes in key_digest (the key stays
# text) and the tail without its 64 hex digits (the g join), when they follow the
# tail's first '"digest":"sha256:', where outbox_tail (sql/117) puts them back; else
# the whole tail. (outbox_tail itself is not called here: given an expression rather
# than a column, PostgreSQL would not inline it, ~5 µs a row.)
INSERT_EVENTS = f"""
INSERT INTO outbox (key, key_digest, type_code, source_code, other_source, data, data_tail)
SELECT CASE WHEN b.digest IS NULL THEN e.key END,
       coalesce(b.digest, CASE WHEN g.tail IS NOT NULL THEN e.key_digest END),
       t.code, s.code, CASE WHEN s.code IS NULL THEN e.source END,
       CASE WHEN coalesce(e.tail, d.tail, k.tail) IS NULL THEN e.data::json END,
       coalesce(e.tail, d.tail, g.tail, k.tail)
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[])
     AS e (key, type, source, data, tail, key_digest)
CROSS JOIN LATERAL (SELECT array_position({_array(TYPE_CODES)}, e.type) AS code) AS t
CROSS JOIN LATERAL (
    SELECT CASE WHEN t.code IN ({_BLOB_TYPE_CODES})
                 AND 'sha256:' || encode(e.key_digest, 'hex') = e.key THEN e.key_digest END
           AS digest
) AS b
CROSS JOIN LATERAL (SELECT array_position({_array(SOURCE_CODES)}, e.source) AS code) AS s
LEFT JOIN LATERAL (
    SELECT x.tail
    FROM images AS i
    CROSS JOIN LATERAL (SELECT image_doc(i) AS text) AS doc
    CROSS JOIN LATERAL (
        SELECT substr(e.data, length(doc.text),
                      greatest(0, length(e.data) - length(doc.text))) AS tail
    ) AS x
    WHERE t.code = {DERIVED_TYPE_CODE} AND e.tail IS NULL AND i.id = e.key
      AND left(doc.text, -1) || x.tail || '}}' = e.data
    FOR SHARE OF i
) AS d ON true
LEFT JOIN LATERAL (
    SELECT substr(e.data, length(p.prefix) + 1) AS tail
    FROM (SELECT outbox_key_prefix(t.code::smallint, e.key) AS prefix) AS p
    WHERE e.tail IS NULL
      AND starts_with(e.data, p.prefix)  -- then prefix || tail is e.data, by construction
) AS k ON true
LEFT JOIN LATERAL (
    SELECT overlay(k.tail PLACING '' FROM m.at + 17 FOR 64) AS tail
    FROM (SELECT strpos(k.tail, '"digest":"sha256:') AS at) AS m
    WHERE t.code IN ({_TAG_TYPE_CODES}) AND e.key_digest IS NOT NULL AND m.at > 0
      -- the 64 characters after the first marker are the digest's digits: outbox_tail
      -- puts them back there (the text before them is unchanged, so the marker stays
      -- the first), giving k.tail byte for byte
      AND substr(k.tail, m.at + 17, 64) = encode(e.key_digest, 'hex')
) AS g ON true
"""
NOTIFY_OUTBOX = "SELECT pg_notify('mirror_outbox', '')"


def _derived_tail(event: Event, payload: bytes, inserted: Mapping[str, bytes]) -> str | None:
    """The tail of a registry.image.created payload that is, byte for byte, the doc this
    transaction inserted for its image with the tail before the doc's last brace."""
    doc = inserted.get(event.subject) if event.type is EventType.IMAGE_CREATED else None
    if (
        doc is None
        or not doc.endswith(b"}")
        or not payload.endswith(b"}")
        or len(payload) < len(doc)
        or not payload.startswith(doc[:-1])
    ):
        return None
    return payload[len(doc) - 1 : -1].decode()


def _key_digest(event: Event) -> bytes | None:
    """A blob event's key, or a tag event's digest, as its 32 bytes, when it is a sha256
    digest in lower-case hex."""
    if event.type in _BLOB_TYPES:
        digest = event.subject
    elif event.type in _TAG_TYPES and isinstance(event.data.get("digest"), str):
        digest = event.data["digest"]
    else:
        return None
    key = digest_key(digest)
    return key if len(key) == SHA256_KEY_BYTES else None


async def append_events(
    conn: asyncpg.Connection,
    events: Sequence[Event],
    *,
    inserted: Mapping[str, bytes] | None = None,
) -> None:
    """Add events to the outbox in the current transaction (and wake the relay on commit).

    ``inserted``: image id -> the doc's bytes, for the images this transaction inserted;
    their registry.image.created payloads are stored as a tail after the doc without
    being compared with it again here."""
    if not events:
        return
    if not conn.is_in_transaction():
        raise RuntimeError("append_events must run inside the transaction of the change")
    payloads = [orjson.dumps(e.data) for e in events]
    tails = [
        _derived_tail(e, p, inserted) if inserted else None
        for e, p in zip(events, payloads, strict=True)
    ]
    await conn.execute(LOCK_OUTBOX, OUTBOX_LOCK_KEY)
    await conn.execute(
        INSERT_EVENTS,
        [e.subject for e in events],
        [e.type.value for e in events],
        [e.source for e in events],
        [None if t is not None else p.decode() for p, t in zip(payloads, tails, strict=True)],
        tails,
        [_key_digest(e) for e in events],
    )
    await conn.execute(NOTIFY_OUTBOX)
