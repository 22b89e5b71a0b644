"""What a merge changed, and the change events that say so.

Pure logic: the merge (``mirror.ingest.merge``) reports rows, this module turns
them into ``Event`` values in the shapes the product contract fixes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mirror.model import Event, EventType

SOURCE = "/registry-mirror/ingest"


@dataclass(frozen=True, slots=True)
class BlobTransition:
    """A digest that gained its first reference (``added``) or lost its last one."""

    digest: str
    size: int
    image_id: str
    added: bool


@dataclass(slots=True)
class MergeResult:
    """What one merge transaction changed; ``events`` went to the outbox with it."""

    created: int = 0
    updated: int = 0
    deleted: int = 0
    blobs_added: int = 0
    blobs_orphaned: int = 0
    events: list[Event] = field(default_factory=list)

    def add(self, other: MergeResult) -> None:
        self.created += other.created
        self.updated += other.updated
        self.deleted += other.deleted
        self.blobs_added += other.blobs_added
        self.blobs_orphaned += other.blobs_orphaned


def with_origin(events: Iterable[Event], origin: Mapping[str, Any] | None) -> list[Event]:
    """The events with ``origin`` (who and why: ``runId``, or ``actor`` and ``operationId``)
    added to their ``data``."""
    if not origin:
        return list(events)
    return [Event(e.type, e.subject, {**e.data, **origin}, e.source) for e in events]


def run_origin(run_id: int | None) -> dict[str, Any]:
    """The origin of ingest events: the ``sync_runs`` id of the walk that wrote them."""
    return {} if run_id is None else {"runId": str(run_id)}


def image_created(image: dict[str, Any]) -> Event:
    return Event(EventType.IMAGE_CREATED, str(image["id"]), image, SOURCE)


def image_updated(old: dict[str, Any], new: dict[str, Any]) -> Event:
    """The new image and what changed: tags added/removed and every top-level field that differs."""
    old_tags = list(old.get("tags", ()))
    new_tags = list(new.get("tags", ()))
    old_set, new_set = set(old_tags), set(new_tags)
    fields = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    changes = {
        "tagsAdded": [t for t in new_tags if t not in old_set],
        "tagsRemoved": [t for t in old_tags if t not in new_set],
        "fields": fields,
    }
    return Event(
        EventType.IMAGE_UPDATED, str(new["id"]), {"image": new, "changes": changes}, SOURCE
    )


def image_deleted(last_known: dict[str, Any], reason: str, source: str = SOURCE) -> Event:
    return Event(
        EventType.IMAGE_DELETED,
        str(last_known["id"]),
        {"image": last_known, "reason": reason},
        source,
    )


def blob_events(transitions: Iterable[BlobTransition], source: str = SOURCE) -> list[Event]:
    return [
        Event(
            EventType.BLOB_ADDED if t.added else EventType.BLOB_ORPHANED,
            t.digest,
            {"digest": t.digest, "size": str(t.size), "image": t.image_id},
            source,
        )
        for t in transitions
    ]
