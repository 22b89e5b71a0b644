"""A List page turned into rows: the image documents, their content hashes, and the
records that ``COPY`` loads into the staging table.

Pure logic, no I/O. An image's ``doc`` is the upstream's JSON object serialised
compactly with its key order kept (orjson), so the local API serves the same
JSON; ``content_hash`` (BLAKE2b-128 of those bytes) tells an unchanged image
without comparing documents. An image's blob references travel on its own row
(sql/090): the digests as 32-byte keys (``mirror.model.digest_key``), config
first when it has a digest, then the layers in order, and their sizes; the image's
own digest is its key too (sql/120). The doc goes
as its template (``mirror.model.image_template``): without the digests, or the whole
blob objects, that those arrays, the blob ids and the ``digest`` column hold.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from mirror.errors import MalformedImage
from mirror.listing import created_at_ns
from mirror.model import digest_key, image_template, registry_of_name

CONTENT_HASH_BYTES = 16
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Column order of the staging tables (sql in mirror.ingest.merge).
IMAGE_COLUMNS = (
    "id",
    "name",
    "registry_id",
    "folder_id",
    "digest",
    "compressed_size",
    "created_ns",
    "doc_template",
    "content_hash",
    "blob_digests",
    "blob_sizes",
    "blob_config",
    "blob_ids",
)

ImageRecord = tuple[
    str,
    str,
    str,
    str | None,
    bytes,
    int,
    int,
    str,
    bytes,
    list[bytes],
    list[int],
    bool,
    str | None,
]


@dataclass(frozen=True, slots=True)
class PageImage:
    """One image of a page: the parsed object, its serialised doc and content hash."""

    id: str
    image: dict[str, Any]
    doc: bytes
    content_hash: bytes


def content_hash(doc: bytes) -> bytes:
    return hashlib.blake2b(doc, digest_size=CONTENT_HASH_BYTES).digest()


def page_images(images: list[dict[str, Any]]) -> list[PageImage]:
    """The page's images keyed by id, each once (the last wins), sorted by id.

    Sorting makes every writer take row locks in the same order; duplicates occur
    when an offset-token page shifts under concurrent inserts.
    """
    by_id: dict[str, PageImage] = {}
    for image in images:
        image_id = image.get("id") if isinstance(image, dict) else None
        if not isinstance(image_id, str) or not image_id:
            raise MalformedImage("an image without an id")
        doc = orjson.dumps(image)
        by_id[image_id] = PageImage(image_id, image, doc, content_hash(doc))
    return [by_id[k] for k in sorted(by_id)]


def registry_of(image: dict[str, Any]) -> str:
    """The registry id: the first segment of ``name`` (``<registryId>/<repository path>``)."""
    return registry_of_name(str(image.get("name", "")))


def _size(value: Any, image_id: str) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        raise MalformedImage(f"image {image_id}: size {value!r} is not an int64") from None


def _created_ns(value: Any, image_id: str) -> int:
    """createdAt as the API sorts it (``mirror.listing.created_at_ns``); none sorts as 0."""
    if not value:
        return 0
    try:
        ns = created_at_ns(str(value))
    except ValueError:
        raise MalformedImage(f"image {image_id}: createdAt {value!r} is not RFC 3339") from None
    return min(max(ns, INT64_MIN), INT64_MAX)


def image_record(item: PageImage, folder_id: str | None) -> ImageRecord:
    image = item.image
    digests, sizes, config = blob_arrays(item)
    digest = str(image.get("digest", ""))
    name = str(image.get("name", ""))
    doc = item.doc.decode()
    template, ids = image_template(doc, digest, digests, sizes, blob_ids(item), item.id, name)
    return (
        item.id,
        name,
        registry_of(image),
        folder_id,
        digest_key(digest),
        _size(image.get("compressedSize"), item.id),
        _created_ns(image.get("createdAt"), item.id),
        template,
        item.content_hash,
        digests,
        sizes,
        config,
        ids,
    )


def blob_arrays(item: PageImage) -> tuple[list[bytes], list[int], bool]:
    """The image's blob references: digests (keys) and sizes, the config first when it has
    a digest (the flag says so), then the layers in order; blobs without a digest are not
    indexed."""
    image = item.image
    digests: list[bytes] = []
    sizes: list[int] = []
    config = image.get("config")
    has_config = False
    if isinstance(config, dict) and config.get("digest"):
        has_config = True
        digests.append(digest_key(str(config["digest"])))
        sizes.append(_size(config.get("size"), item.id))
    for layer in image.get("layers", ()):
        if isinstance(layer, dict) and layer.get("digest"):
            digests.append(digest_key(str(layer["digest"])))
            sizes.append(_size(layer.get("size"), item.id))
    return digests, sizes, has_config


def blob_ids(item: PageImage) -> list[str] | None:
    """The ids of the blobs ``blob_arrays`` keeps, in its order; None when one has none."""
    image = item.image
    blobs = [image.get("config"), *image.get("layers", ())]
    ids: list[str] = []
    for blob in blobs:
        if isinstance(blob, dict) and blob.get("digest"):
            blob_id = blob.get("id")
            if not isinstance(blob_id, str) or not blob_id:
                return None
            ids.append(blob_id)
    return ids
