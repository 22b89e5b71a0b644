"""Change events in the shapes the product contract fixes."""

from __future__ import annotations

from mirror.ingest.changes import (
    BlobTransition,
    blob_events,
    image_created,
    image_deleted,
    image_updated,
)
from mirror.model import EventType

OLD = {"id": "crp1", "name": "r/a", "digest": "sha256:1", "tags": ["a", "b"]}


def test_created_carries_the_image() -> None:
    event = image_created(OLD)
    assert (event.type, event.subject, event.data, event.topic) == (
        EventType.IMAGE_CREATED,
        "crp1",
        OLD,
        "images",
    )


def test_updated_lists_tags_added_removed_and_fields() -> None:
    new = OLD | {"tags": ["b", "c"], "digest": "sha256:2"}
    event = image_updated(OLD, new)
    assert event.type is EventType.IMAGE_UPDATED and event.subject == "crp1"
    assert event.data == {
        "image": new,
        "changes": {"tagsAdded": ["c"], "tagsRemoved": ["a"], "fields": ["digest", "tags"]},
    }
    dropped = {k: v for k, v in OLD.items() if k != "tags"}
    assert image_updated(OLD, dropped).data["changes"] == {
        "tagsAdded": [],
        "tagsRemoved": ["a", "b"],
        "fields": ["tags"],
    }


def test_deleted_carries_last_known_image_and_reason() -> None:
    event = image_deleted(OLD, "upstream-gone")
    assert event.data == {"image": OLD, "reason": "upstream-gone"}
    assert event.type is EventType.IMAGE_DELETED


def test_blob_events_use_the_digest_as_subject_and_sizes_as_strings() -> None:
    added, orphaned = blob_events(
        [BlobTransition("sha256:x", 42, "crp1", True), BlobTransition("sha256:y", 7, "crp2", False)]
    )
    assert (added.type, added.subject, added.topic) == (EventType.BLOB_ADDED, "sha256:x", "blobs")
    assert added.data == {"digest": "sha256:x", "size": "42", "image": "crp1"}
    assert orphaned.type is EventType.BLOB_ORPHANED
    assert orphaned.data == {"digest": "sha256:y", "size": "7", "image": "crp2"}
