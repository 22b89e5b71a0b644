"""The pure parts of the subscriber helper: the LRU of seen ids, decoding, topics."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mirror.errors import EnvelopeError
from mirror.events.envelope import OutboxEvent, to_kafka_record
from mirror.events.subscriber import SeenIds, received_event, topics_for


def test_seen_ids_reports_repeats() -> None:
    seen = SeenIds(capacity=3)
    assert seen.add("a") and seen.add("b")
    assert not seen.add("a")
    assert "a" in seen and len(seen) == 2


def test_seen_ids_forgets_the_least_recently_seen() -> None:
    seen = SeenIds(capacity=3)
    for event_id in ("a", "b", "c"):
        seen.add(event_id)
    seen.add("a")  # refreshes a: b is now the oldest
    seen.add("d")
    assert "b" not in seen
    assert {"a", "c", "d"} <= {x for x in "abcd" if x in seen}
    assert len(seen) == 3


def test_seen_ids_needs_room() -> None:
    with pytest.raises(ValueError):
        SeenIds(capacity=0)


def test_received_event_decodes_a_relay_record() -> None:
    event = OutboxEvent(
        id=1, event_id="6f1c0b2a-0000-4000-8000-000000000001", topic="images",
        key="crp00000000000000001", type="registry.image.deleted",
        source="/registry-mirror/api", time=datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC),
        data={"image": {"id": "crp00000000000000001"}, "reason": "api"},
    )  # fmt: skip
    record = to_kafka_record(event, "p")
    received = received_event("p.images", 2, 17, record.headers, record.value)
    assert received.id == event.event_id
    assert received.type == "registry.image.deleted"
    assert received.subject == event.key
    assert received.time == event.time
    assert received.data == event.data
    assert (received.topic, received.partition, received.offset) == ("p.images", 2, 17)
    as_json = received.to_json()
    assert as_json["specversion"] == "1.0" and as_json["data"] == event.data


def test_received_event_refuses_a_bad_time() -> None:
    headers = [
        ("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"/s"),
        ("ce_type", b"registry.image.created"), ("ce_time", b"yesterday"),
    ]  # fmt: skip
    with pytest.raises(EnvelopeError, match="RFC 3339"):
        received_event("t", 0, 0, headers, b"{}")


def test_topics_follow_the_types() -> None:
    assert topics_for(None, "p") == ["p.blobs", "p.images", "p.tags"]
    assert topics_for(["registry.image.deleted"], "p") == ["p.images"]
    assert topics_for(["registry.blob.orphaned", "registry.image.created"], "p") == [
        "p.blobs", "p.images",
    ]  # fmt: skip
    assert topics_for(["registry.tag.*"], "p") == ["p.tags"]
    assert topics_for(["registry.*"], "p") == ["p.blobs", "p.images", "p.tags"]
    with pytest.raises(ValueError, match="unknown event type"):
        topics_for(["registry.image.renamed"], "p")
    with pytest.raises(ValueError, match="names no event type"):
        topics_for(["registry.nothing.*"], "p")
