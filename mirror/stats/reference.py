"""The dedup definitions as plain Python over a set of images: the brute force.

Slow on purpose (it looks at every image for every answer) and obviously
right; the tests check every figure the SQL aggregates serve against it.
``history`` is every image the index ever held (the current ones included):
what a scope referenced once decides its reclaimable blobs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mirror.model import Image, Scope, ScopeKind
from mirror.stats.figures import (
    DedupStats,
    ImageUsage,
    LayerSavings,
    ReclaimableBlob,
    RelatedImage,
)
from mirror.stats.queries import CHAIN_PART_BYTES, chain_part

CHAIN_LAYERS = 256


@dataclass
class ReferenceIndex:
    """Current images, every image ever seen, and the folder of each registry."""

    images: dict[str, Image] = field(default_factory=dict)
    history: dict[str, Image] = field(default_factory=dict)
    folder_of: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        images: Iterable[Image],
        history: Iterable[Image] = (),
        folder_of: Mapping[str, str] | None = None,
    ) -> ReferenceIndex:
        current = {image.id: image for image in images}
        seen = {image.id: image for image in history}
        seen.update(current)
        return cls(current, seen, dict(folder_of or {}))

    # -- scopes ---------------------------------------------------------------

    def in_scope(self, image: Image, scope: Scope | None) -> bool:
        if scope is None:
            return True
        if scope.kind is ScopeKind.REPOSITORY:
            return image.name == scope.id
        if scope.kind is ScopeKind.REGISTRY:
            return image.registry_id == scope.id
        return self.folder_of.get(image.registry_id) == scope.id

    def scope_images(self, scope: Scope | None) -> list[Image]:
        return [image for image in self.images.values() if self.in_scope(image, scope)]

    def sizes(self) -> dict[str, int]:
        """The size of every digest ever seen (a blob's size is a function of its digest)."""
        out: dict[str, int] = {}
        for image in self.history.values():
            for blob in image.blobs:
                out.setdefault(blob.digest, blob.size)
        return out

    # -- the figures ----------------------------------------------------------

    def stats(self, scope: Scope | None) -> DedupStats:
        images = self.scope_images(scope)
        sizes = self.sizes()
        current = {blob.digest for image in images for blob in image.blobs}
        ever = {
            blob.digest
            for image in self.history.values()
            if self.in_scope(image, scope)
            for blob in image.blobs
        }
        gone = ever - current
        return DedupStats(
            scope=scope,
            images=len(images),
            blobs=len(current),
            logical_bytes=sum(blob.size for image in images for blob in image.blobs),
            compressed_bytes=sum(image.compressed_size for image in images),
            stored_bytes=sum(sizes[d] for d in current),
            reclaimable_blobs=len(gone),
            reclaimable_bytes=sum(sizes[d] for d in gone),
        )

    def layers(self, limit: int, repositories_per_layer: int) -> list[LayerSavings]:
        refs: Counter[str] = Counter()
        repositories: dict[str, set[str]] = {}
        for image in self.images.values():
            for blob in image.blobs:
                refs[blob.digest] += 1
                repositories.setdefault(blob.digest, set()).add(image.name)
        sizes = self.sizes()
        shared = [
            LayerSavings(
                digest=digest,
                size=sizes[digest],
                ref_count=count,
                repository_count=len(repositories[digest]),
                repositories=tuple(sorted(repositories[digest])[:repositories_per_layer]),
            )
            for digest, count in refs.items()
            if count > 1
        ]
        shared.sort(key=lambda layer: (-layer.saved_bytes, layer.digest))
        return shared[:limit]

    def reclaimable(self, limit: int) -> list[ReclaimableBlob]:
        """Largest first; ``orphaned_at`` is left empty (the brute force keeps no clock)."""
        current = {blob.digest for image in self.images.values() for blob in image.blobs}
        sizes = self.sizes()
        gone = sorted((d for d in sizes if d not in current), key=lambda d: (-sizes[d], d))
        return [ReclaimableBlob(d, sizes[d]) for d in gone[:limit]]

    def usage(self, image_id: str, scope: Scope | None, related_limit: int) -> ImageUsage | None:
        target = self.images.get(image_id)
        if target is None:
            return None
        others = [image for image in self.scope_images(scope) if image.id != image_id]
        elsewhere = {blob.digest for image in others for blob in image.blobs}
        own = {blob.digest: blob.size for blob in target.blobs}
        unique = sum(size for digest, size in own.items() if digest not in elsewhere)
        shared = sum(size for digest, size in own.items() if digest in elsewhere)

        mine = layer_digests(target)
        bases = [image for image in others if is_proper_prefix(layer_digests(image), mine)]
        bases.sort(key=lambda image: (-len(image.layers), image.id))
        derived = [image for image in others if is_proper_prefix(mine, layer_digests(image))]
        derived.sort(key=lambda image: (chain_key(image), image.id))
        return ImageUsage(
            image_id=image_id,
            scope=scope,
            unique_bytes=unique,
            shared_bytes=shared,
            base_images=tuple(related(image) for image in bases[:related_limit]),
            derived_images=tuple(related(image) for image in derived[:related_limit]),
        )


def layer_digests(image: Image) -> tuple[str, ...]:
    return tuple(layer.digest for layer in image.layers)


def is_proper_prefix(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return len(a) < len(b) and b[: len(a)] == a


def chain_key(image: Image) -> bytes:
    """The lineage index key: 4 bytes per layer digest, first 256 layers."""
    return b"".join(chain_part(layer.digest) for layer in image.layers[:CHAIN_LAYERS])[
        : CHAIN_LAYERS * CHAIN_PART_BYTES
    ]


def related(image: Image) -> RelatedImage:
    return RelatedImage(
        id=image.id,
        name=image.name,
        digest=image.digest,
        layer_count=len(image.layers),
        tags=image.tags,
    )
