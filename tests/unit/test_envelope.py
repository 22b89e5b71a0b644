"""The CloudEvents 1.0 forms of an outbox row (mirror/events/envelope.py)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from mirror.errors import EnvelopeError
from mirror.events.envelope import (
    OutboxEvent,
    attributes_from_headers,
    binary_headers,
    format_time,
    structured_from_kafka,
    to_kafka_record,
    to_structured,
)
from mirror.model import EventType

# RFC 3339 date-time (section 5.6), as the CloudEvents `time` attribute requires.
RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$", re.IGNORECASE
)
EVENT_ID = "0b7c3a4e-5d86-4f5e-9d1e-3c2b1a0f9e8d"
IMAGE = {"id": "crpabcdefghijklmnopq", "name": "crpreg/app", "tags": ["v1"]}


def make_event(**changes: object) -> OutboxEvent:
    fields: dict[str, object] = {
        "id": 42,
        "event_id": EVENT_ID,
        "topic": "images",
        "key": IMAGE["id"],
        "type": EventType.IMAGE_DELETED.value,
        "source": "/registry-mirror/ingest",
        "time": datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC),
        "data": {"image": IMAGE, "reason": "upstream-gone"},
    }
    fields.update(changes)
    return OutboxEvent(**fields)  # type: ignore[arg-type]


def test_from_row_takes_the_outbox_columns() -> None:
    row = {
        "id": 7,
        "event_id": uuid.UUID(EVENT_ID),
        "topic": "blobs",
        "key": "sha256:abc",
        "type": "registry.blob.added",
        "source": "/registry-mirror/ingest",
        "time": datetime(2025, 1, 1, tzinfo=UTC),
        "data": {"digest": "sha256:abc", "size": "12", "image": "crp1"},
        "sent_at": None,
    }
    event = OutboxEvent.from_row(row)
    assert event.id == 7
    assert event.event_id == EVENT_ID
    assert event.key == "sha256:abc"
    assert event.data == row["data"]


def test_binary_headers_carry_every_required_attribute() -> None:
    headers = dict(binary_headers(make_event()))
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_id"] == EVENT_ID.encode()
    assert headers["ce_source"] == b"/registry-mirror/ingest"
    assert headers["ce_type"] == b"registry.image.deleted"
    assert headers["ce_subject"] == IMAGE["id"].encode()
    assert headers["content-type"] == b"application/json"
    assert RFC3339.match(headers["ce_time"].decode())
    assert all(isinstance(v, bytes) for v in headers.values())


def test_kafka_record_key_is_the_subject_and_value_the_data() -> None:
    record = to_kafka_record(make_event(), "registry-mirror")
    assert record.topic == "registry-mirror.images"
    assert record.key == IMAGE["id"].encode()
    assert orjson.loads(record.value) == {"image": IMAGE, "reason": "upstream-gone"}


def test_blob_events_go_to_the_blobs_topic_keyed_by_digest() -> None:
    event = make_event(topic="blobs", key="sha256:ff", type="registry.blob.orphaned")
    record = to_kafka_record(event, "p")
    assert (record.topic, record.key) == ("p.blobs", b"sha256:ff")


def test_stored_json_text_passes_through_unparsed() -> None:
    text = '{"b": 1, "a": "x"}'  # key order kept: the bytes are not re-serialised
    assert to_kafka_record(make_event(data=text), "p").value == text.encode()
    assert to_kafka_record(make_event(data=text.encode()), "p").value == text.encode()
    feed = orjson.dumps(to_structured(make_event(data=text)))
    assert feed.endswith(b'"data":{"b": 1, "a": "x"}}')


def test_structured_form_has_the_spec_attributes_in_order() -> None:
    event = to_structured(make_event())
    assert list(event) == [
        "specversion", "id", "source", "type", "subject", "time", "datacontenttype",
        "dataschema", "data",
    ]  # fmt: skip
    assert event["specversion"] == "1.0"
    assert event["id"] == EVENT_ID
    assert event["subject"] == IMAGE["id"]
    assert event["time"] == "2025-03-04T05:06:07.123456Z"
    assert event["datacontenttype"] == "application/json"
    assert event["dataschema"] == "urn:registry-mirror:event-data:v1:registry.image.deleted"
    assert event["data"]["reason"] == "upstream-gone"


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC), "2025-03-04T05:06:07.000000Z"),
        (
            datetime(2025, 3, 4, 8, 6, 7, 5, tzinfo=timezone(timedelta(hours=3))),
            "2025-03-04T05:06:07.000005Z",
        ),
        (datetime(2025, 3, 4, 5, 6, 7), "2025-03-04T05:06:07.000000Z"),  # naive = UTC
    ],
)
def test_time_is_rfc3339_in_utc(moment: datetime, text: str) -> None:
    assert format_time(moment) == text
    assert RFC3339.match(text)


def test_binary_record_reads_back_as_the_structured_form() -> None:
    event = make_event()
    record = to_kafka_record(event, "p")
    assert structured_from_kafka(record.headers, record.value) == orjson.loads(
        orjson.dumps(to_structured(event))
    )


def test_attributes_from_headers_needs_the_required_ones() -> None:
    headers = [h for h in binary_headers(make_event()) if h[0] != "ce_source"]
    with pytest.raises(EnvelopeError, match="ce_source"):
        attributes_from_headers(headers)


def test_attributes_from_headers_rejects_other_spec_versions() -> None:
    headers = [
        ("ce_specversion", b"0.3"), ("ce_id", b"1"), ("ce_source", b"/s"), ("ce_type", b"t"),
    ]  # fmt: skip
    with pytest.raises(EnvelopeError, match="specversion"):
        attributes_from_headers(headers)


def test_attributes_from_headers_ignores_foreign_and_empty_headers() -> None:
    headers = [*binary_headers(make_event()), ("traceparent", b"00-ab"), ("ce_extra", None)]
    attributes = attributes_from_headers(headers)
    assert "traceparent" not in attributes
    assert "extra" not in attributes
    assert attributes["datacontenttype"] == "application/json"
