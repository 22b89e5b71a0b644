"""JSON Schemas (draft 2020-12) of every event type's ``data``, and their ``dataschema`` URIs.

Pure data. ``mirror.api.schemas_handlers`` serves them at
``/mirror/v1/schemas/<type>.json``; every event carries ``dataschema``
(``ce_dataschema`` on Kafka) = the schema's ``$id``, a URN that names the type
and the schema's version (``urn:registry-mirror:event-data:v1:<type>``).
The AsyncAPI document (``mirror.events.asyncapi``) embeds the same schemas.
"""

from __future__ import annotations

import copy
from typing import Any

from mirror.model import EventType

SCHEMA_VERSION = "v1"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMAS_PATH = "/mirror/v1/schemas"

_INT64 = {"type": "string", "pattern": "^-?[0-9]{1,19}$", "description": "int64 as a string"}
_IMAGE_ID = {"type": "string", "minLength": 1, "maxLength": 50}
_DIGEST = {"type": "string", "minLength": 1}

_BLOB: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "digest": _DIGEST,
        "size": _INT64,
        "urls": {"type": "array", "items": {"type": "string"}},
    },
}
IMAGE: dict[str, Any] = {
    "title": "Image",
    "description": "An image in the upstream's JSON shape (camelCase, int64 as strings, "
    "empty fields omitted).",
    "type": "object",
    "required": ["id"],
    "properties": {
        "id": _IMAGE_ID,
        "name": {"type": "string", "description": "<registryId>/<repository path>"},
        "digest": _DIGEST,
        "compressedSize": _INT64,
        "config": _BLOB,
        "layers": {"type": "array", "items": _BLOB},
        "tags": {"type": "array", "items": {"type": "string"}},
        "createdAt": {"type": "string"},
    },
}

# Who and why, on every event: ingest events name the sync run (or the head-watch);
# API deletes the operation and the actor.
ORIGIN: dict[str, Any] = {
    "runId": {**_INT64, "description": "the sync_runs id of the walk that wrote the event"},
    "via": {"enum": ["head-watch"], "description": "written by the head-watch, between walks"},
    "operationId": {"type": "string", "description": "the upstream Operation of an API Delete"},
    "actor": {
        "type": "object",
        "description": "who asked for an API Delete; never a secret",
        "required": ["role"],
        "additionalProperties": False,
        "properties": {
            "role": {"enum": ["read", "admin", "anonymous"]},
            "tokenId": {"type": "string", "pattern": "^tok-[0-9a-f]{12}$"},
            "requestId": {"type": "string"},
            "clientAddress": {"type": "string"},
        },
    },
}


def _data(
    title: str, required: list[str], properties: dict[str, Any], *, closed: bool = True
) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "title": title,
        "type": "object",
        "required": required,
        "properties": {**properties, **ORIGIN},
    }
    if closed:
        schema["additionalProperties"] = False
    return schema


_BLOB_EVENT = {"digest": _DIGEST, "size": _INT64, "image": {"type": "string"}}
_TAG = {
    "repository": {"type": "string", "minLength": 1},
    "tag": {"type": "string", "minLength": 1},
    "imageId": _IMAGE_ID,
    "digest": {"type": "string"},
}

_BODIES: dict[EventType, dict[str, Any]] = {
    # The image itself, plus the origin fields: open, as the upstream may add fields.
    EventType.IMAGE_CREATED: _data(
        "registry.image.created: the new image",
        ["id"],
        IMAGE["properties"],
        closed=False,
    ),
    EventType.IMAGE_UPDATED: _data(
        "registry.image.updated: the new image and what changed",
        ["image", "changes"],
        {
            "image": IMAGE,
            "changes": {
                "type": "object",
                "required": ["tagsAdded", "tagsRemoved", "fields"],
                "additionalProperties": False,
                "properties": {
                    "tagsAdded": {"type": "array", "items": {"type": "string"}},
                    "tagsRemoved": {"type": "array", "items": {"type": "string"}},
                    "fields": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    ),
    EventType.IMAGE_DELETED: _data(
        "registry.image.deleted: the last known image and why it left",
        ["image", "reason"],
        {"image": IMAGE, "reason": {"enum": ["upstream-gone", "api"]}},
    ),
    EventType.BLOB_ADDED: _data(
        "registry.blob.added: a digest's first reference", ["digest", "size", "image"], _BLOB_EVENT
    ),
    EventType.BLOB_ORPHANED: _data(
        "registry.blob.orphaned: a digest lost its last reference",
        ["digest", "size", "image"],
        _BLOB_EVENT,
    ),
    EventType.TAG_ADDED: _data(
        "registry.tag.added: the tag now names this image",
        ["repository", "tag", "imageId", "digest"],
        {**_TAG, "previousImageId": _IMAGE_ID},
    ),
    EventType.TAG_REMOVED: _data(
        "registry.tag.removed: the tag names no image of the repository any more",
        ["repository", "tag", "imageId", "digest", "reason"],
        {**_TAG, "reason": {"enum": ["untagged", "image-deleted"]}},
    ),
}


def dataschema(event_type: str) -> str:
    """The ``dataschema`` attribute of an event of this type (the schema's ``$id``)."""
    return f"urn:registry-mirror:event-data:{SCHEMA_VERSION}:{event_type}"


def schema_path(event_type: str) -> str:
    """Where the API serves the schema."""
    return f"{SCHEMAS_PATH}/{event_type}.json"


def data_schema(event_type: EventType) -> dict[str, Any]:
    """The standalone JSON Schema of ``data`` for ``event_type`` (a fresh copy)."""
    return {
        "$schema": DIALECT,
        "$id": dataschema(event_type.value),
        **copy.deepcopy(_BODIES[event_type]),
    }


def embedded_schema(event_type: EventType) -> dict[str, Any]:
    """The schema of ``data`` without ``$schema``/``$id``, to embed in another document."""
    return copy.deepcopy(_BODIES[event_type])


def all_schemas() -> dict[str, dict[str, Any]]:
    """Every type's schema, by type name."""
    return {t.value: data_schema(t) for t in EventType}
