"""A simulated image and its wire form: the record, its JSON, and how its blobs are made.

``SimImage`` is what the simulator holds per image (generated on demand or
pushed); the List fast path writes JSON text straight from cached fragments with
``image_json_text``, byte-identical to serializing ``SimImage.to_json()``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from mirror.model import Blob, Image
from mirror.upstream.simulator import catalog
from mirror.upstream.simulator.wire import (
    BYTE_TO_ID_CHAR,
    NORMAL_QUANTILES,
    NORMAL_SHIFT,
    digest_from_bytes,
    id_from_bytes,
    rfc3339,
)

# (id, digest, size): a blob as the wire carries it
BlobTuple = tuple[str, str, int]


class SimImage(NamedTuple):
    """One image as the simulator holds it; ``ref`` is its internal number, ``repo`` its repository."""

    ref: int
    repo: int
    id: str
    name: str
    digest: str
    compressed_size: int
    config: BlobTuple
    layers: tuple[BlobTuple, ...]
    tags: tuple[str, ...]
    created_ns: int

    def to_json(self) -> dict[str, Any]:
        """The upstream's JSON shape (field order as the proto; empty fields omitted)."""
        cid, cdigest, csize = self.config
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "digest": self.digest,
            "compressedSize": str(self.compressed_size),
            "config": {"id": cid, "digest": cdigest, "size": str(csize)},
            "layers": [{"id": i, "digest": d, "size": str(s)} for i, d, s in self.layers],
        }
        if self.tags:
            out["tags"] = list(self.tags)
        out["createdAt"] = rfc3339(self.created_ns)
        return out

    def json_text(self) -> str:
        """``to_json()`` as JSON text (the same bytes ``orjson.dumps`` would give)."""
        return image_json_text(
            self.id,
            self.name,
            self.digest,
            self.compressed_size,
            blob_json_text(self.config),
            ",".join(map(blob_json_text, self.layers)),
            self.tags,
            self.created_ns,
        )

    def to_image(self) -> Image:
        """As the project's domain type."""
        return Image(
            id=self.id,
            name=self.name,
            digest=self.digest,
            compressed_size=self.compressed_size,
            config=Blob(*self.config),
            layers=tuple(Blob(*layer) for layer in self.layers),
            tags=self.tags,
            created_at=rfc3339(self.created_ns),
        )


_SIZE_FACTORS: dict[float, list[float]] = {}
_SIZE_TABLES: dict[tuple[int, float, int, int], list[int]] = {}


def size_table(median: int, sigma: float, low: int = 100, high: int = 8 << 30) -> list[int]:
    """Every size ``lognormal_size`` can give for these parameters, by table index (built once)."""
    key = (median, sigma, low, high)
    table = _SIZE_TABLES.get(key)
    if table is None:
        factors = _SIZE_FACTORS.get(sigma)
        if factors is None:
            factors = _SIZE_FACTORS[sigma] = [math.exp(sigma * z) for z in NORMAL_QUANTILES]
        table = _SIZE_TABLES[key] = [min(high, max(low, int(median * f))) for f in factors]
    return table


def lognormal_size(
    raw: bytes, median: int, sigma: float, low: int = 100, high: int = 8 << 30
) -> int:
    """A heavy-tailed size from 2 random bytes: log-normal around ``median``, clipped."""
    return size_table(median, sigma, low, high)[((raw[0] << 8) | raw[1]) >> NORMAL_SHIFT]


def config_blob(unique: bytes) -> BlobTuple:
    return blob_from(unique[:32], 6 * catalog.KB, 0.5, 1200, 64 * catalog.KB)


def blob_from(
    raw: bytes, median: int, sigma: float, low: int = 100, high: int = 8 << 30
) -> BlobTuple:
    """A blob only one image has, from 32 random bytes: its digest, and id and size from it."""
    return (
        id_from_bytes("crp", raw[15:32]),
        digest_from_bytes(raw),
        lognormal_size(raw[12:14], median, sigma, low, high),
    )


class Part(NamedTuple):
    """Consecutive blobs of an image, with their JSON text and total size, built once."""

    blobs: tuple[BlobTuple, ...]
    json: str
    size: int


def make_part(blobs: tuple[BlobTuple, ...]) -> Part:
    return Part(blobs, ",".join(map(blob_json_text, blobs)), sum(blob[2] for blob in blobs))


def unique_blob_json(raw: bytes, sizes: list[int]) -> tuple[str, int]:
    """``blob_json_text(blob_from(raw, ...))`` and the size, in one step (the List fast path).

    ``sizes`` is ``size_table`` of the ``blob_from`` parameters.
    """
    size = sizes[((raw[12] << 8) | raw[13]) >> NORMAL_SHIFT]
    return (
        f'{{"id":"crp{raw[15:32].translate(BYTE_TO_ID_CHAR).decode("ascii")}",'
        f'"digest":"sha256:{raw[:32].hex()}","size":"{size}"}}',
        size,
    )


def blob_json_text(blob: BlobTuple) -> str:
    """A blob as the upstream's JSON (ids, digests and decimal sizes need no escaping)."""
    return f'{{"id":"{blob[0]}","digest":"{blob[1]}","size":"{blob[2]}"}}'


def image_json_text(
    image_id: str,
    name: str,
    digest: str,
    compressed_size: int,
    config_json: str,
    layers_json: str,
    tags: tuple[str, ...],
    created_ns: int,
) -> str:
    """An image as the upstream's JSON text, fields in proto order, empty ones omitted.

    Every value is escape-free by construction: ids, digests and sizes are
    [0-9a-z:], names match the repository pattern, tags the OCI tag pattern.
    """
    tags_json = ',"tags":["' + '","'.join(tags) + '"]' if tags else ""
    return (
        f'{{"id":"{image_id}","name":"{name}","digest":"{digest}",'
        f'"compressedSize":"{compressed_size}","config":{config_json},"layers":[{layers_json}]'
        f'{tags_json},"createdAt":"{rfc3339(created_ns)}"}}'
    )
