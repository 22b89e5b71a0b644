"""The published event contracts: ``/mirror/v1/schemas/<type>.json`` (JSON Schema of each
event type's ``data``), ``/mirror/v1/schemas`` (their index) and ``/asyncapi.json``
(the AsyncAPI 3.0 document of the Kafka topics, for the configured prefix).

Public paths, like ``/openapi.json``: they describe, they hold no data.
"""

from __future__ import annotations

from aiohttp import web

from mirror.api.appkeys import PUBLIC_PATHS, SETTINGS
from mirror.api.jsonbody import json_response
from mirror.errors import NotFound
from mirror.events.asyncapi import document
from mirror.events.schemas import SCHEMAS_PATH, data_schema, dataschema, schema_path
from mirror.model import EventType

ASYNCAPI_PATH = "/asyncapi.json"


async def get_schema(request: web.Request) -> web.Response:
    name = request.match_info["type"]
    try:
        event_type = EventType(name)
    except ValueError:
        raise NotFound(f"no schema for event type {name[:80]!r}") from None
    return json_response(data_schema(event_type))


async def list_schemas(request: web.Request) -> web.Response:
    return json_response(
        {
            "schemas": [
                {"type": t.value, "dataschema": dataschema(t.value), "path": schema_path(t.value)}
                for t in EventType
            ]
        }
    )


async def get_asyncapi(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return json_response(
        document(
            settings.kafka_topic_prefix,
            partitions=settings.kafka_partitions,
            replicas=settings.kafka_replication,
        )
    )


def add_schema_routes(app: web.Application) -> None:
    app.router.add_get(SCHEMAS_PATH, list_schemas, name="mirror:schemas")
    app.router.add_get(SCHEMAS_PATH + "/{type}.json", get_schema, name="mirror:schema")
    app.router.add_get(ASYNCAPI_PATH, get_asyncapi, name="asyncapi")
    public = app.get(PUBLIC_PATHS)
    if public is None:
        public = set()
        app[PUBLIC_PATHS] = public
    public.add(ASYNCAPI_PATH)
    public.add(SCHEMAS_PATH)
    public.update(schema_path(t.value) for t in EventType)
