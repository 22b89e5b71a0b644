"""CloudEvents 1.0 forms of an outbox row. Pure: no I/O and no Kafka client here.

Two forms of the same event:

* **Kafka binary mode** (the relay): attributes as ``ce_*`` headers,
  ``content-type: application/json``, the key is the subject (image id, blob
  digest or ``<repository>:<tag>``), the value is the JSON ``data``; the
  CloudEvents Kafka protocol binding, which the CNCF ``cloudevents`` SDK reads
  (``cloudevents.core.bindings.kafka.from_binary``);
* **structured JSON** (the ``/mirror/v1/events`` feed, ``mirror events tail``):
  ``{specversion, id, source, type, subject, time, datacontenttype, dataschema, data}``.

``ce_id`` is ``outbox.event_id``: a replay of the same row carries the same id, so
consumers drop duplicates by it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from mirror.errors import EnvelopeError, PayloadMissing
from mirror.events.schemas import dataschema

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
CONTENT_TYPE_HEADER = "content-type"
HEADER_PREFIX = "ce_"
# The attributes the spec requires of every event, and those we always set besides.
REQUIRED_ATTRIBUTES = ("id", "source", "specversion", "type")
ATTRIBUTES = (*REQUIRED_ATTRIBUTES, "time", "subject", "dataschema")


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One outbox row as the relay and the feed read it.

    ``id`` is the outbox position (commit order, the feed cursor); ``event_id`` is the
    CloudEvent id. ``data`` is the decoded JSON, or the stored JSON text (str/bytes),
    which is passed through unparsed.
    """

    id: int
    event_id: str
    topic: str
    key: str
    type: str
    source: str
    time: datetime
    data: Any

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> OutboxEvent:
        """From an outbox row (asyncpg Record or dict) with the table's column names.

        A NULL ``data`` (a derived payload that cannot be derived) is ``PayloadMissing``:
        never published as ``null``.
        """
        if row["data"] is None:
            raise PayloadMissing(f"outbox id {row['id']}: {row['type']} has no payload")
        return cls(
            id=int(row["id"]),
            event_id=str(row["event_id"]),
            topic=row["topic"],
            key=row["key"],
            type=row["type"],
            source=row["source"],
            time=row["time"],
            data=row["data"],
        )


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """What the relay hands the producer for one event."""

    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` and microseconds; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    elif moment.utcoffset():
        moment = moment.astimezone(UTC)
    # isoformat is several times faster than strftime (the relay's hot path).
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def kafka_topic(prefix: str, topic: str) -> str:
    """``<prefix>.images`` or ``<prefix>.blobs``."""
    return f"{prefix}.{topic}"


def data_bytes(data: Any) -> bytes:
    """The JSON bytes of ``data``; stored JSON text passes through untouched."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    return orjson.dumps(data)


def binary_headers(event: OutboxEvent) -> tuple[tuple[str, bytes], ...]:
    """The Kafka headers of binary mode: ``ce_*`` attributes and ``content-type``."""
    return (
        ("ce_specversion", SPECVERSION.encode()),
        ("ce_id", event.event_id.encode()),
        ("ce_source", event.source.encode()),
        ("ce_type", event.type.encode()),
        ("ce_time", format_time(event.time).encode()),
        ("ce_subject", event.key.encode()),
        ("ce_dataschema", dataschema(event.type).encode()),
        (CONTENT_TYPE_HEADER, CONTENT_TYPE.encode()),
    )


def to_kafka_record(event: OutboxEvent, topic_prefix: str) -> KafkaRecord:
    """The binary-mode Kafka record: key = subject, value = JSON data."""
    return KafkaRecord(
        topic=kafka_topic(topic_prefix, event.topic),
        key=event.key.encode(),
        value=data_bytes(event.data),
        headers=binary_headers(event),
    )


def to_structured(event: OutboxEvent) -> dict[str, Any]:
    """The structured JSON form (the feed).

    Stored JSON text in ``data`` becomes an ``orjson.Fragment``: serialise the result
    with orjson, which embeds it verbatim without parsing it.
    """
    data = event.data
    if isinstance(data, str | bytes):
        data = orjson.Fragment(data)
    return {
        "specversion": SPECVERSION,
        "id": event.event_id,
        "source": event.source,
        "type": event.type,
        "subject": event.key,
        "time": format_time(event.time),
        "datacontenttype": CONTENT_TYPE,
        "dataschema": dataschema(event.type),
        "data": data,
    }


def attributes_from_headers(headers: Iterable[tuple[str, bytes | None]]) -> dict[str, str]:
    """The CloudEvent attributes of a binary-mode Kafka record (``ce_`` stripped).

    ``content-type`` becomes ``datacontenttype``. Raises ``EnvelopeError`` when a
    required attribute is missing or the spec version is not 1.0.
    """
    attributes: dict[str, str] = {}
    for name, raw in headers:
        if raw is None:
            continue
        lowered = name.lower()
        if lowered.startswith(HEADER_PREFIX):
            attributes[lowered[len(HEADER_PREFIX) :]] = raw.decode()
        elif lowered == CONTENT_TYPE_HEADER:
            attributes["datacontenttype"] = raw.decode()
    missing = [a for a in REQUIRED_ATTRIBUTES if not attributes.get(a)]
    if missing:
        raise EnvelopeError(f"not a CloudEvent: missing {', '.join('ce_' + a for a in missing)}")
    if attributes["specversion"] != SPECVERSION:
        raise EnvelopeError(f"unsupported CloudEvents specversion {attributes['specversion']!r}")
    return attributes


def structured_from_kafka(
    headers: Iterable[tuple[str, bytes | None]], value: bytes | None
) -> dict[str, Any]:
    """The structured JSON form of a binary-mode Kafka record (for ``events tail``)."""
    event: dict[str, Any] = dict(attributes_from_headers(headers))
    if value is not None:
        content_type = event.get("datacontenttype", CONTENT_TYPE)
        event["data"] = orjson.loads(value) if is_json(content_type) else value.decode()
    return event


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")
