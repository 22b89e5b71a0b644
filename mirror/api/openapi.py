"""The OpenAPI 3.1 description of the local API, served at ``/openapi.json``.

Written by hand next to the handlers it describes (``tests/integration/
test_api_schema.py`` runs schemathesis against it, so a drift shows as a
failure). The upstream-compatible paths use the cloud's REST shapes: int64 as
strings, RFC 3339 timestamps, empty fields omitted.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from mirror.api.jsonbody import raw_json_response
from mirror.listing import (
    FILTER_MAX_LEN,
    MAX_PAGE_SIZE,
    ORDER_BY_MAX_LEN,
    PAGE_TOKEN_MAX_LEN,
)
from mirror.model import ID_MAX_LEN, EventType

OPENAPI_PATH = "/openapi.json"

INT64 = {"type": "string", "pattern": "^-?[0-9]+$", "description": "int64, as a decimal string"}
TIMESTAMP = {"type": "string", "format": "date-time"}
ID_PATTERN = "^[A-Za-z0-9_-]*$"  # mirror.listing.ID_RE: the alphabet of the cloud's ids
REPOSITORY_PATTERN = r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(/([a-z0-9]+(?:[._-][a-z0-9]+)*))*$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


EVENT_FILTERS = [
    _query(
        "type",
        {"type": "array", "items": {"type": "string"}},
        "Event types, or prefixes like `registry.tag.*` (repeatable); "
        "one that names no type is a 400.",
    ),
    _query("subject", {"type": "string"}, "The event subject, exactly."),
    _query(
        "source",
        {"type": "string", "enum": ["/registry-mirror/ingest", "/registry-mirror/api"]},
        "The writer of the change.",
    ),
]
ERRORS = {"default": _json(_ref("Error"), "An error, in the upstream's shape")}
PAGE_SIZE = _query(
    "pageSize",
    {"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_PAGE_SIZE},
    "Results per page; 0 or absent means 100.",
)
PAGE_TOKEN = _query(
    "pageToken",
    {"type": "string", "maxLength": PAGE_TOKEN_MAX_LEN},
    "The nextPageToken of the previous page.",
)
SCOPE_PARAMS = [
    _query(
        "registryId",
        {"type": "string", "maxLength": ID_MAX_LEN, "pattern": ID_PATTERN},
        "Ignored when repositoryName is given.",
    ),
    _query(
        "repositoryName",
        {"type": "string", "pattern": REPOSITORY_PATTERN},
        "Takes precedence over registryId and folderId.",
    ),
    _query(
        "folderId",
        {"type": "string", "maxLength": ID_MAX_LEN, "pattern": ID_PATTERN},
        "Ignored when repositoryName or registryId is given.",
    ),
]
IMAGE_ID = _path(
    "imageId",
    {"type": "string", "minLength": 1, "maxLength": ID_MAX_LEN, "pattern": ID_PATTERN},
    "Image id.",
)

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "integer", "description": "gRPC status code"},
            "message": {"type": "string"},
            "details": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"@type": {"type": "string"}, "requestId": {"type": "string"}},
                },
            },
        },
    },
    "Blob": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "digest": {"type": "string"},
            "size": INT64,
            "urls": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Image": {
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "digest": {"type": "string"},
            "compressedSize": INT64,
            "config": _ref("Blob"),
            "layers": {"type": "array", "items": _ref("Blob")},
            "tags": {"type": "array", "items": {"type": "string"}},
            "createdAt": TIMESTAMP,
        },
    },
    "ListImagesResponse": {
        "type": "object",
        "properties": {
            "images": {"type": "array", "items": _ref("Image")},
            "nextPageToken": {"type": "string", "maxLength": PAGE_TOKEN_MAX_LEN},
        },
    },
    "Operation": {
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": {"type": "string"},
            "description": {"type": "string"},
            "createdAt": TIMESTAMP,
            "createdBy": {"type": "string"},
            "modifiedAt": TIMESTAMP,
            "done": {"type": "boolean"},
            "metadata": {"type": "object"},
            "error": {
                "type": "object",
                "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
            },
            "response": {"type": "object"},
        },
    },
    "BlobUsage": {
        "type": "object",
        "required": ["digest", "size", "refCount", "firstSeen", "repositoryCount"],
        "properties": {
            "digest": {"type": "string"},
            "size": INT64,
            "refCount": INT64,
            "firstSeen": TIMESTAMP,
            "orphanedAt": TIMESTAMP,
            "repositories": {"type": "array", "items": {"type": "string"}},
            "repositoryCount": INT64,
            "images": {"type": "array", "items": _ref("Image")},
            "nextPageToken": {"type": "string", "maxLength": PAGE_TOKEN_MAX_LEN},
        },
    },
    "ScopeSync": {
        "type": "object",
        "required": ["scope", "generation"],
        "properties": {
            "scope": {"type": "string"},
            "generation": INT64,
            "walking": {"type": "boolean"},
            "lastStartedAt": TIMESTAMP,
            "lastCompleteAt": TIMESTAMP,
            "lagSeconds": {"type": "number"},
            "lastDurationSeconds": {"type": "number"},
            "lastImages": INT64,
            "lastError": {"type": "string"},
            "lastErrorAt": TIMESTAMP,
            "lastRun": {
                "type": "object",
                "required": ["status", "startedAt"],
                "properties": {
                    "status": {"enum": ["running", "complete", "failed", "cancelled"]},
                    "startedAt": TIMESTAMP,
                    "finishedAt": TIMESTAMP,
                    "pages": INT64,
                    "images": INT64,
                    "created": INT64,
                    "updated": INT64,
                    "deleted": INT64,
                    "anomalies": INT64,
                    "error": {"type": "string"},
                    # the deletion guard held this run's deletions back, and why
                    "suspect": {"type": "string"},
                    # deletion candidates left for the next pass
                    "unchecked": INT64,
                },
            },
        },
    },
    "Sync": {
        "type": "object",
        "properties": {"scopes": {"type": "array", "items": _ref("ScopeSync")}},
    },
    "CloudEvent": {
        "type": "object",
        "required": ["specversion", "id", "source", "type", "subject", "time", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string"},
            "source": {"type": "string"},
            "type": {"enum": [t.value for t in EventType]},
            "dataschema": {"type": "string", "format": "uri"},
            "subject": {"type": "string"},
            "time": TIMESTAMP,
            "datacontenttype": {"const": "application/json"},
            "data": {"type": "object"},
        },
    },
    "Events": {
        "type": "object",
        "required": ["next"],
        "properties": {
            "events": {"type": "array", "items": _ref("CloudEvent")},
            "next": {**INT64, "description": "The cursor to pass as `after`."},
        },
    },
    "Stats": {
        "type": "object",
        "required": ["images", "blobs", "logicalBytes", "storedBytes", "savedBytes", "dedupRatio"],
        "properties": {
            "scope": {"type": "string"},
            "images": INT64,
            "blobs": INT64,
            "logicalBytes": INT64,
            "compressedBytes": INT64,
            "storedBytes": INT64,
            "savedBytes": INT64,
            "dedupRatio": {"type": "number"},
            "reclaimableBlobs": INT64,
            "reclaimableBytes": INT64,
        },
    },
    "LayerReport": {
        "type": "object",
        "properties": {
            "layers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["digest", "size", "refCount", "savedBytes"],
                    "properties": {
                        "digest": {"type": "string"},
                        "size": INT64,
                        "refCount": INT64,
                        "repositoryCount": INT64,
                        "repositories": {"type": "array", "items": {"type": "string"}},
                        "savedBytes": INT64,
                    },
                },
            },
            "reclaimable": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["digest", "size"],
                    "properties": {
                        "digest": {"type": "string"},
                        "size": INT64,
                        "orphanedAt": TIMESTAMP,
                    },
                },
            },
            "reclaimableBlobs": INT64,
            "reclaimableBytes": INT64,
        },
    },
    "RelatedImage": {
        "type": "object",
        "required": ["id", "name"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "digest": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "layerCount": INT64,
        },
    },
    "ImageUsage": {
        "type": "object",
        "required": ["imageId", "uniqueBytes", "sharedBytes"],
        "properties": {
            "imageId": {"type": "string"},
            "scope": {"type": "string"},
            "uniqueBytes": INT64,
            "sharedBytes": INT64,
            "baseImages": {"type": "array", "items": _ref("RelatedImage")},
            "derivedImages": {"type": "array", "items": _ref("RelatedImage")},
        },
    },
    "Status": {"type": "object", "properties": {"status": {"type": "string"}}},
}

STATS_SCOPE = [
    _query(
        "registryId",
        {"type": "string", "maxLength": ID_MAX_LEN, "pattern": ID_PATTERN},
        "Ignored when repositoryName is given.",
    ),
    _query("repositoryName", {"type": "string", "pattern": REPOSITORY_PATTERN}, "A repository."),
    _query(
        "folderId", {"type": "string", "maxLength": ID_MAX_LEN, "pattern": ID_PATTERN}, "A folder."
    ),
]
LIMIT = {"type": "integer", "minimum": 0, "maximum": 1000}

PATHS: dict[str, Any] = {
    "/container-registry/v1/images": {
        "get": {
            "operationId": "listImages",
            "summary": "List images (as the upstream's ImageService.List).",
            "parameters": [
                *SCOPE_PARAMS,
                PAGE_SIZE,
                PAGE_TOKEN,
                _query(
                    "filter",
                    {"type": "string", "maxLength": FILTER_MAX_LEN},
                    'On name: name="a", name!="a", name IN ("a", "b"), name NOT IN ("a").',
                ),
                _query(
                    "orderBy",
                    {"type": "string", "maxLength": ORDER_BY_MAX_LEN},
                    "Comma-separated name, digest, created_at, each optionally asc or desc.",
                ),
            ],
            "responses": {"200": _json(_ref("ListImagesResponse")), **ERRORS},
        }
    },
    "/container-registry/v1/images/{imageId}": {
        "get": {
            "operationId": "getImage",
            "summary": "One image (as ImageService.Get).",
            "parameters": [IMAGE_ID],
            "responses": {"200": _json(_ref("Image")), **ERRORS},
        },
        "delete": {
            "operationId": "deleteImage",
            "summary": "Delete an image upstream; the index follows when the Operation is done.",
            "description": (
                "Needs the admin role when MIRROR_API_TOKENS is set. Passed to the upstream "
                "only for an image the index holds: any other id is NOT_FOUND, answered "
                "locally."
            ),
            "parameters": [IMAGE_ID],
            "responses": {"200": _json(_ref("Operation")), **ERRORS},
        },
    },
    "/operations/{operationId}": {
        "get": {
            "operationId": "getOperation",
            "summary": "A Delete operation started through this API.",
            "parameters": [
                _path(
                    "operationId",
                    {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": ID_MAX_LEN,
                        "pattern": ID_PATTERN,
                    },
                    "Operation id.",
                )
            ],
            "responses": {"200": _json(_ref("Operation")), **ERRORS},
        }
    },
    "/mirror/v1/blobs/{digest}": {
        "get": {
            "operationId": "getBlob",
            "summary": "A blob by digest, the repositories and a page of the images that contain it.",
            "parameters": [
                _path(
                    "digest", {"type": "string", "minLength": 1, "maxLength": 200}, "algorithm:hex"
                ),
                PAGE_SIZE,
                PAGE_TOKEN,
            ],
            "responses": {"200": _json(_ref("BlobUsage")), **ERRORS},
        }
    },
    "/mirror/v1/schemas": {
        "get": {
            "operationId": "listEventSchemas",
            "summary": "The JSON Schema of each event type's data: type, dataschema, path.",
            "responses": {"200": _json({"type": "object"}), **ERRORS},
        }
    },
    "/mirror/v1/schemas/{type}.json": {
        "get": {
            "operationId": "getEventSchema",
            "summary": "The JSON Schema (draft 2020-12) of one event type's data.",
            "parameters": [_path("type", {"enum": [t.value for t in EventType]}, "An event type.")],
            "responses": {"200": _json({"type": "object"}), **ERRORS},
        }
    },
    "/asyncapi.json": {
        "get": {
            "operationId": "getAsyncApi",
            "summary": "The AsyncAPI 3.0 document of the Kafka topics.",
            "responses": {"200": _json({"type": "object"}), **ERRORS},
        }
    },
    "/mirror/v1/sync": {
        "get": {
            "operationId": "getSync",
            "summary": "Per scope: last complete walk, duration, counts, errors, lag.",
            "responses": {"200": _json(_ref("Sync")), **ERRORS},
        }
    },
    "/mirror/v1/events": {
        "get": {
            "operationId": "getEvents",
            "summary": "The change events (CloudEvents, structured JSON), oldest first.",
            "parameters": [
                _query(
                    "after",
                    {"type": "string", "pattern": "^([0-9]{0,18}|latest)$"},
                    "The `next` of the previous answer; `latest`: from the end.",
                ),
                _query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": 1000},
                    "Events per answer (100).",
                ),
                *EVENT_FILTERS,
            ],
            "responses": {"200": _json(_ref("Events")), **ERRORS},
        }
    },
    "/mirror/v1/events/stream": {
        "get": {
            "operationId": "streamEvents",
            "summary": (
                "The change events as Server-Sent Events, without end: each message's `id` is "
                "the event's cursor and its `data` the structured CloudEvent on one line; "
                "`: heartbeat` comments when idle. A reconnect with `Last-Event-ID` resumes "
                "right after that event (no gap, no repeat)."
            ),
            "parameters": [
                _query(
                    "after",
                    {"type": "string", "pattern": "^([0-9]{0,18}|latest)$"},
                    "Start after this cursor; absent or `latest`: from the end.",
                ),
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                    "description": "The last cursor received; it wins over `after`.",
                },
                *EVENT_FILTERS,
            ],
            "responses": {
                "200": {
                    "description": "An endless event stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **ERRORS,
            },
        }
    },
    "/mirror/v1/stats": {
        "get": {
            "operationId": "getStats",
            "summary": "Dedup statistics of the whole index or one scope.",
            "parameters": STATS_SCOPE,
            "responses": {"200": _json(_ref("Stats")), **ERRORS},
        }
    },
    "/mirror/v1/stats/layers": {
        "get": {
            "operationId": "getLayerStats",
            "summary": "Top shared layers by bytes saved, and reclaimable blobs.",
            "parameters": [
                _query("limit", LIMIT, "Layers to list."),
                _query("reclaimableLimit", LIMIT, "Reclaimable blobs to list."),
            ],
            "responses": {"200": _json(_ref("LayerReport")), **ERRORS},
        }
    },
    "/mirror/v1/images/{imageId}/usage": {
        "get": {
            "operationId": "getImageUsage",
            "summary": "An image's unique and shared bytes, its base and derived images.",
            "parameters": [
                IMAGE_ID,
                *STATS_SCOPE,
                _query("limit", LIMIT, "Related images to list."),
            ],
            "responses": {"200": _json(_ref("ImageUsage")), **ERRORS},
        }
    },
    "/healthz": {
        "get": {
            "operationId": "health",
            "summary": "The process answers.",
            "security": [],
            "responses": {"200": _json(_ref("Status")), **ERRORS},
        }
    },
    "/readyz": {
        "get": {
            "operationId": "ready",
            "summary": "The database answers and the migrations are applied (else 503).",
            "security": [],
            "responses": {"200": _json(_ref("Status")), **ERRORS},
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics.",
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **ERRORS,
            },
        }
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "registry-mirror local API",
        "version": "1",
        "description": (
            "The cloud Container Registry ImageService (List, Get, Delete) answered from a local "
            "index, plus blob lookup, sync status, the change-event feed and dedup statistics. "
            "Errors are {code, message, details: [RequestInfo]} with the cloud's HTTP status."
        ),
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    # Tokens are needed only when MIRROR_API_TOKENS is set.
    "security": [{}, {"bearer": []}],
}

_BODY = orjson.dumps(OPENAPI)


async def openapi_handler(request: web.Request) -> web.Response:
    return raw_json_response(_BODY)
