"""The dedup figures as frozen types, and their JSON (upstream conventions).

Definitions (PRODUCT.md, "Dedup statistics"; docs/STATS.md has a worked example):

- logical bytes: Σ over the images of the scope of the sizes of their blobs
  (config + layers), as if nothing were shared; compressed bytes: Σ compressedSize;
- stored bytes: Σ over the distinct digests referenced in the scope of the blob size;
- saved bytes = logical − stored; dedup ratio = logical / stored (1.0 when nothing is stored);
- reclaimable: digests once referenced in the scope that no image of the scope references now;
- per layer: reference count (blob references of images with the digest), repositories,
  saved bytes = (refs − 1) × size, so Σ per-layer saved = logical − stored;
- per image: unique bytes = Σ size of its distinct digests that no other image of
  the scope references, shared bytes = Σ size of the rest;
- lineage: B is derived from A when A's layers (digests in order, config excluded)
  are a proper prefix of B's.

Dedup is by digest, never by blob id. JSON: camelCase, int64 as strings,
``dedupRatio`` a number, empty lists omitted. Every answer also says up to where
it is exact (``asOf``) and how far the folded aggregates are behind the index
(``behind``): see ``Freshness`` and docs/STATS.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mirror.model import Scope


def scope_label(scope: Scope | None) -> str:
    """``all`` for the whole index, else ``kind:ID``."""
    return "all" if scope is None else str(scope)


def dedup_ratio(logical: int, stored: int) -> float:
    return logical / stored if stored else 1.0


@dataclass(frozen=True, slots=True)
class Freshness:
    """Up to where the folded aggregates are exact, and what is not folded yet.

    ``event_id``: the newest outbox event committed before the last fold pass's
    snapshot (every change of it and before is in the figures); ``time``: that
    snapshot (RFC 3339); ``pending_changes``: change-log rows committed and not
    folded yet; ``lag_seconds``: age of the oldest of them (0 when none).
    """

    event_id: int
    time: str
    pending_changes: int
    lag_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "asOf": {"eventId": str(self.event_id), "time": self.time},
            "behind": {"changes": str(self.pending_changes), "seconds": round(self.lag_seconds, 3)},
        }


def _with_freshness(out: dict[str, Any], freshness: Freshness | None) -> dict[str, Any]:
    if freshness is not None:
        out.update(freshness.to_json())
    return out


@dataclass(frozen=True, slots=True)
class DedupStats:
    """The dedup figures of one scope (``None``: the whole index)."""

    scope: Scope | None
    images: int
    blobs: int
    logical_bytes: int
    compressed_bytes: int
    stored_bytes: int
    reclaimable_blobs: int
    reclaimable_bytes: int
    # where the figures stand; not part of the figures (equality ignores it)
    freshness: Freshness | None = field(default=None, compare=False)

    @property
    def saved_bytes(self) -> int:
        return self.logical_bytes - self.stored_bytes

    @property
    def dedup_ratio(self) -> float:
        return dedup_ratio(self.logical_bytes, self.stored_bytes)

    def to_json(self, *, with_freshness: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scope": scope_label(self.scope),
            "images": str(self.images),
            "blobs": str(self.blobs),
            "logicalBytes": str(self.logical_bytes),
            "compressedBytes": str(self.compressed_bytes),
            "storedBytes": str(self.stored_bytes),
            "savedBytes": str(self.saved_bytes),
            "dedupRatio": self.dedup_ratio,
            "reclaimableBlobs": str(self.reclaimable_blobs),
            "reclaimableBytes": str(self.reclaimable_bytes),
        }
        return _with_freshness(out, self.freshness if with_freshness else None)


@dataclass(frozen=True, slots=True)
class LayerSavings:
    """One shared blob: how often it is referenced and how many bytes sharing it saves.

    ``repositories`` lists at most a few names (sorted); ``repository_count`` counts them all.
    """

    digest: str
    size: int
    ref_count: int
    repository_count: int
    repositories: tuple[str, ...]

    @property
    def saved_bytes(self) -> int:
        return (self.ref_count - 1) * self.size

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "digest": self.digest,
            "size": str(self.size),
            "refCount": str(self.ref_count),
            "repositoryCount": str(self.repository_count),
            "savedBytes": str(self.saved_bytes),
        }
        if self.repositories:
            out["repositories"] = list(self.repositories)
        return out


@dataclass(frozen=True, slots=True)
class ReclaimableBlob:
    """A digest no image references any more (its row is kept in ``blobs``)."""

    digest: str
    size: int
    orphaned_at: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"digest": self.digest, "size": str(self.size)}
        if self.orphaned_at:
            out["orphanedAt"] = self.orphaned_at
        return out


@dataclass(frozen=True, slots=True)
class LayerReport:
    """The top shared layers (most bytes saved first) and the largest reclaimable blobs."""

    layers: tuple[LayerSavings, ...]
    reclaimable: tuple[ReclaimableBlob, ...]
    reclaimable_blobs: int
    reclaimable_bytes: int
    freshness: Freshness | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.layers:
            out["layers"] = [layer.to_json() for layer in self.layers]
        if self.reclaimable:
            out["reclaimable"] = [blob.to_json() for blob in self.reclaimable]
        out["reclaimableBlobs"] = str(self.reclaimable_blobs)
        out["reclaimableBytes"] = str(self.reclaimable_bytes)
        return _with_freshness(out, self.freshness)


@dataclass(frozen=True, slots=True)
class RelatedImage:
    """A base or derived image in a lineage answer."""

    id: str
    name: str
    digest: str
    layer_count: int
    tags: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name}
        if self.digest:
            out["digest"] = self.digest
        if self.tags:
            out["tags"] = list(self.tags)
        out["layerCount"] = str(self.layer_count)
        return out


@dataclass(frozen=True, slots=True)
class ImageUsage:
    """What one image costs on its own within a scope, and its lineage there.

    Bases are nearest first (most layers first); derived images follow their
    layer-chain order (siblings together), then id.
    """

    image_id: str
    scope: Scope | None
    unique_bytes: int
    shared_bytes: int
    base_images: tuple[RelatedImage, ...]
    derived_images: tuple[RelatedImage, ...]
    freshness: Freshness | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "imageId": self.image_id,
            "scope": scope_label(self.scope),
            "uniqueBytes": str(self.unique_bytes),
            "sharedBytes": str(self.shared_bytes),
        }
        if self.base_images:
            out["baseImages"] = [image.to_json() for image in self.base_images]
        if self.derived_images:
            out["derivedImages"] = [image.to_json() for image in self.derived_images]
        return _with_freshness(out, self.freshness)
