"""The gRPC messages of the ImageService and the REST contract they share, as plain functions.

The official SDK's generated classes (``yandexcloud``) are the messages; no
.proto file is copied here. A ``ListImagesRequest`` is validated by
``mirror.listing.parse_list_request``, the very parser of the REST query
string (its fields under their REST names; an empty string or a zero page size
is "absent", as in proto3), so both protocols accept, refuse and word errors
alike. Answers are the REST JSON parsed into the message, so both protocols
carry the same data.

Images take a fast path: ``json_format`` walks descriptors in Python (~13 ms
for a page of 100 images with their layers), so an image whose JSON holds only
the fields of ``Image`` and ``Blob`` is built with the messages' constructors
(2-3x faster); any other shape (a field this code does not map) goes through
``json_format``, which keeps every field the SDK knows. A unit test holds the
two paths equal.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from google.protobuf import empty_pb2, json_format, timestamp_pb2
from google.protobuf.message import Message
from yandex.cloud.containerregistry.v1 import blob_pb2, image_pb2, image_service_pb2

from mirror.listing import ListRequest, created_at_ns, parse_list_request

M = TypeVar("M", bound=Message)

# Operations carry Any fields (DeleteImageMetadata, google.protobuf.Empty): the
# types must be in the descriptor pool for the JSON mapping to resolve them.
KNOWN_ANY_TYPES = (image_service_pb2.DeleteImageMetadata, empty_pb2.Empty)


def list_request(message: image_service_pb2.ListImagesRequest) -> ListRequest:
    """The validated List request of a gRPC ``ListImagesRequest`` (``InvalidArgument`` if bad)."""
    pairs = [
        ("registryId", message.registry_id),
        ("repositoryName", message.repository_name),
        ("folderId", message.folder_id),
        ("pageToken", message.page_token),
        ("filter", message.filter),
        ("orderBy", message.order_by),
    ]
    given = [(name, value) for name, value in pairs if value]
    if message.page_size:
        given.append(("pageSize", str(message.page_size)))
    return parse_list_request(given)


def from_json(body: bytes | str, message: M) -> M:
    """``message`` filled from the upstream's JSON (fields this SDK does not know are dropped)."""
    return from_dict(orjson.loads(body), message)


def from_dict(value: dict[str, Any], message: M) -> M:
    json_format.ParseDict(value, message, ignore_unknown_fields=True)
    return message


_IMAGE_KEYS = frozenset(
    ("id", "name", "digest", "compressedSize", "config", "layers", "tags", "createdAt")
)
_BLOB_KEYS = frozenset(("id", "digest", "size", "urls"))


def list_response(body: bytes | str) -> image_service_pb2.ListImagesResponse:
    """A List page's JSON (``{"images": [...], "nextPageToken": ...}``) as the gRPC response."""
    page = orjson.loads(body)
    return image_service_pb2.ListImagesResponse(
        images=[image_message(image) for image in page.get("images", ())],
        next_page_token=page.get("nextPageToken", ""),
    )


def image_message(image: dict[str, Any]) -> image_pb2.Image:
    """One image's JSON as ``Image``: by its constructors when its shape is known, else ``json_format``."""
    if not image.keys() <= _IMAGE_KEYS:
        return from_dict(image, image_pb2.Image())
    config = image.get("config")
    layers = image.get("layers", ())
    if (config is not None and not _plain_blob(config)) or not all(map(_plain_blob, layers)):
        return from_dict(image, image_pb2.Image())
    created = None
    if "createdAt" in image:
        try:  # protobuf's own parser goes through strptime: a third of the page's time
            seconds, nanos = divmod(created_at_ns(image["createdAt"]), 1_000_000_000)
        except (TypeError, ValueError):
            return from_dict(image, image_pb2.Image())
        created = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    return image_pb2.Image(
        id=image.get("id", ""),
        name=image.get("name", ""),
        digest=image.get("digest", ""),
        compressed_size=int(image.get("compressedSize", 0)),
        config=_blob(config) if config is not None else None,
        layers=[_blob(layer) for layer in layers],
        tags=image.get("tags", ()),
        created_at=created,
    )


def _plain_blob(blob: Any) -> bool:
    return isinstance(blob, dict) and blob.keys() <= _BLOB_KEYS


def _blob(blob: dict[str, Any]) -> blob_pb2.Blob:
    return blob_pb2.Blob(
        id=blob.get("id", ""),
        digest=blob.get("digest", ""),
        size=int(blob.get("size", 0)),
        urls=blob.get("urls", ()),
    )
