"""Serialized images kept by their JSON's content, so a page read again is not encoded again.

The key is the BLAKE2b digest (128 bits) of the image's JSON text as the index
holds it: a changed row is a changed doc, so a stale entry can never be found
(it just ages out). Bounded by bytes (``MIRROR_GRPC_IMAGE_CACHE_MB``), the least
recently used entries leave first; 0 (the default) turns it off: with the C encoder
(``mirror/_image_wire.c``) a lookup costs more than encoding, so it pays only for the
Python encoder. One event loop uses it: no lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import blake2b

from prometheus_client import Counter

from mirror.byte_lru import ByteLRU
from mirror.image_wire import doc_bytes, page_of_images

# What an entry costs beyond its bytes: the key, the bytes object, the dict slot and link.
ENTRY_OVERHEAD = 200

LOOKUPS = Counter(
    "mirror_grpc_image_cache_lookups",
    "Serialized images the gRPC API looked up in its cache, by result.",
    ("result",),
)
_HITS = LOOKUPS.labels("hit")
_MISSES = LOOKUPS.labels("miss")


class ImageWireCache:
    """Serialized ``Image`` of a JSON doc, from the cache or encoded (``mirror.image_wire``)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: ByteLRU[bytes, bytes] = ByteLRU(max_bytes)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        return self._entries.size

    def image(self, doc: bytes) -> bytes:
        if self.max_bytes <= 0:
            return doc_bytes(doc)
        key = blake2b(doc, digest_size=16).digest()
        wire = self._entries.get(key)
        if wire is not None:
            _HITS.inc()
            return wire
        _MISSES.inc()
        wire = doc_bytes(doc)
        self._entries.put(key, wire, len(wire) + ENTRY_OVERHEAD)
        return wire

    def page(self, docs: Sequence[bytes], next_page_token: str) -> bytes:
        """``ListImagesResponse`` (serialized) of a page's docs and token."""
        return page_of_images([self.image(doc) for doc in docs], next_page_token)
