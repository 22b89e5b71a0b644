"""Writing change events to the outbox, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
_TYPE_CODE = {t: n for n, t in enumerate(TYPE_CODES, 1)}
_SOURCE_CODE = {s: n for n, s in enumerate(SOURCE_CODES, 1)}
# The types keyed by a blob's digest (sql/107: such a key may be stored as bytes).
_BLOB_TYPE_CODES = frozenset(_TYPE_CODE[t] for t in (EventType.BLOB_ADDED, EventType.BLOB_ORPHANED))
# The types whose payload names a digest that may be stored as bytes (sql/117).
_TAG_TYPE_CODES = frozenset(_TYPE_CODE[t] for t in (EventType.TAG_ADDED, EventType.TAG_REMOVED))
# What precedes the digits of a tag event's digest in its tail (sql/117, outbox_tail).
_DIGEST_MARKER = '"digest":"sha256:'
_HEX_DIGITS = 2 * SHA256_KEY_BYTES


def key_prefix(type_code: int, key: str) -> str | None:
    """What a payload of this type starts with, said by its key: the SQL
    ``outbox_key_prefix`` (sql/101), which readers put back before a stored tail.
    tests/integration/test_outbox_derived.py holds the two equal."""
    if type_code in _BLOB_TYPE_CODES:
        return '{"digest":"' + key + '"'
    if type_code in _TAG_TYPE_CODES:
        repository, _, tag = key.rpartition(":")
        return '{"repository":"' + repository + '","tag":"' + tag + '"'
    return None


# Each row's stored form is decided here (``outbox_columns``); the statement inserts
# it. The payloads go as text[] and become json in the statement: a json[]
# parameter would take the pool's text-format json codec, and asyncpg would send
# the whole array as one quoted, escaped literal for the server to parse back.
#
# Some payloads are stored as a tail only (data NULL), each only when the reader's
# reconstruction is the payload byte for byte:
# * registry.image.created: the image's doc with the tail before its last brace (the
#   origin, e.g. ',"runId":"N"'); sql/100: outbox_events derives it, and the images
#   triggers write it out before the doc changes or goes. Proven one of two ways:
#   - by the writer, for an image it inserted in this transaction (``inserted``: the
#     doc's bytes as it wrote them; ``_derived_tail``), and nobody else can change
#     the row before we commit;
#   - here (the d join's WHERE), against the image's doc as this transaction sees
#     it, the row share-locked so that nobody changes it before we commit;
# * blob and tag events: ``key_prefix`` (sql/101's outbox_key_prefix: '{"digest":
#   "<key>"' or '{"repository":"<r>","tag":"<t>"'), then the tail, when the payload
#   starts with that prefix; nothing to write out later.
#
# A blob event's key of the form "sha256:" and 64 lowercase hex digits is stored as
# its 32 bytes (key_digest, key NULL; sql/107): ``digest_key`` gives 32 bytes for
# exactly those keys, and outbox_subject encodes them back to the key.
#
# A tag event's tail (after its key's prefix) names the tagged image's digest: when
# that is such a digest, the row keeps its 32 bytes in key_digest (the key stays
# text) and the tail without its 64 hex digits, when they follow the tail's first
# '"digest":"sha256:', where outbox_tail (sql/117) puts them back; else the whole
# tail.
#
# Deciding these in PostgreSQL (until 2026-12-03) cost ~3 µs of its CPU a row, a
# first mirror's ~4.7 rows an image (bench/RESULTS.md, "## Ingest").
INSERT_EVENTS = f"""
INSERT INTO outbox (key, key_digest, type_code, source_code, other_source, data, data_tail)
SELECT e.key, e.key_digest, e.type_code, e.source_code, e.other_source,
       CASE WHEN coalesce(e.tail, d.tail) IS NULL THEN e.data::json END,
       coalesce(e.tail, d.tail)
FROM unnest($1::text[], $2::bytea[], $3::smallint[], $4::smallint[], $5::text[], $6::text[],
            $7::text[])
     AS e (key, key_digest, type_code, source_code, other_source, data, tail)
LEFT JOIN LATERAL (
    SELECT x.tail
    FROM images AS i
    CROSS JOIN LATERAL (SELECT image_doc(i) AS text) AS doc
    CROSS JOIN LATERAL (
        SELECT substr(e.data, length(doc.text),
                      greatest(0, length(e.data) - length(doc.text))) AS tail
    ) AS x
    WHERE e.type_code = {DERIVED_TYPE_CODE} AND e.tail IS NULL AND i.id = e.key
      AND left(doc.text, -1) || x.tail || '}}' = e.data
    FOR SHARE OF i
) AS d ON true
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


# A batch of events as INSERT_EVENTS's parameters: keys, key digests, type codes,
# source codes, other sources, payloads stored whole, tails.
OutboxColumns = tuple[
    list[str | None],
    list[bytes | None],
    list[int],
    list[int | None],
    list[str | None],
    list[str | None],
    list[str | None],
]


def outbox_columns(
    events: Sequence[Event], inserted: Mapping[str, bytes] | None = None
) -> OutboxColumns:
    """The events as the outbox stores them (see ``INSERT_EVENTS``), column by column."""
    columns: OutboxColumns = ([], [], [], [], [], [], [])
    keys, key_digests, types, sources, others, whole, tails = columns
    for event in events:
        code = _TYPE_CODE[event.type]
        source = _SOURCE_CODE.get(event.source)
        types.append(code)
        sources.append(source)
        others.append(None if source is not None else event.source)
        key: str | None = event.subject
        key_digest: bytes | None = None
        payload = orjson.dumps(event.data)
        tail = _derived_tail(event, payload, inserted) if inserted else None
        text = None
        if tail is None:
            text = payload.decode()
            prefix = key_prefix(code, event.subject)
            if prefix is not None and text.startswith(prefix):
                tail = text[len(prefix) :]
            if code in _BLOB_TYPE_CODES:
                digest = digest_key(event.subject)
                if len(digest) == SHA256_KEY_BYTES:
                    key, key_digest = None, digest
            elif tail is not None and code in _TAG_TYPE_CODES:
                tail, key_digest = _without_digest(tail, event.data.get("digest"))
        keys.append(key)
        key_digests.append(key_digest)
        whole.append(text if tail is None else None)
        tails.append(tail)
    return columns


def _without_digest(tail: str, digest: object) -> tuple[str, bytes | None]:
    """A tag event's tail without the digits of its digest, and the digest's 32 bytes,
    when the digits follow the tail's first marker (where outbox_tail puts them back);
    else the tail as it is."""
    if not isinstance(digest, str):
        return tail, None
    key = digest_key(digest)
    marker = tail.find(_DIGEST_MARKER)
    if len(key) != SHA256_KEY_BYTES or marker < 0:
        return tail, None
    at = marker + len(_DIGEST_MARKER)
    if tail[at : at + _HEX_DIGITS] != key.hex():
        return tail, None
    return tail[:at] + tail[at + _HEX_DIGITS :], key


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
    columns = outbox_columns(events, inserted)
    await conn.execute(LOCK_OUTBOX, OUTBOX_LOCK_KEY)
    await conn.execute(INSERT_EVENTS, *columns)
    await conn.execute(NOTIFY_OUTBOX)
