"""The gRPC messages of the ImageService and the REST contract they share, as plain functions.

The official SDK's generated classes (``yandexcloud``) are the messages; no
.proto file is copied here. A ``ListImagesRequest`` is validated by
``mirror.listing.parse_list_request``, the very parser of the REST query
string (its fields under their REST names; an empty string or a zero page size
is "absent", as in proto3), so both protocols accept, refuse and word errors
alike. Answers are the REST JSON parsed into the message, so both protocols
carry the same data.

Images are encoded by ``mirror.image_wire`` (their JSON straight to wire
bytes, equal to what ``json_format`` makes); the mirror's servicers send those
bytes as they are, the simulator's parse them into messages here.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from google.protobuf import empty_pb2, json_format
from google.protobuf.message import Message
from yandex.cloud.containerregistry.v1 import image_pb2, image_service_pb2

from mirror.image_wire import image_bytes, page_of_images
from mirror.listing import ListRequest, parse_list_request

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


def list_response(body: bytes | str) -> image_service_pb2.ListImagesResponse:
    """A List page's JSON (``{"images": [...], "nextPageToken": ...}``) as the gRPC response."""
    page = orjson.loads(body)
    images = [image_bytes(image) for image in page.get("images", ())]
    return image_service_pb2.ListImagesResponse.FromString(
        page_of_images(images, page.get("nextPageToken", ""))
    )


def image_message(image: dict[str, Any]) -> image_pb2.Image:
    """One image's JSON as ``Image`` (every field the SDK knows; see ``mirror.image_wire``)."""
    return image_pb2.Image.FromString(image_bytes(image))
