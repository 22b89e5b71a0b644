"""The AsyncAPI 3.0 document of the Kafka topics: channels, keys, headers, payloads.

Pure data, built from the event types and their ``data`` schemas
(``mirror.events.schemas``). Served at ``/asyncapi.json`` with the configured
topic prefix; ``docs/asyncapi.json`` is the document for the default prefix
(``python -m mirror.events.asyncapi > docs/asyncapi.json``; a test keeps it true).
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from mirror.events.envelope import CONTENT_TYPE, SPECVERSION
from mirror.events.schemas import dataschema, embedded_schema
from mirror.model import EventType

ASYNCAPI_VERSION = "3.0.0"
DOCUMENT_VERSION = "1.1.0"
DEFAULT_PREFIX = "registry-mirror"
KAFKA_BINDING_VERSION = "0.5.0"

_KEYS = {
    "images": "the image id (crp…)",
    "blobs": "the blob digest (sha256:…)",
    "tags": "<repository name>:<tag>, the repository name being the image's name "
    "(<registryId>/<path>)",
}
_SOURCES = ["/registry-mirror/ingest", "/registry-mirror/api"]


def _message_name(event_type: EventType) -> str:
    """``registry.tag.added`` -> ``tagAdded``."""
    _, noun, verb = event_type.value.split(".")
    return noun + verb.capitalize()


def _headers(event_type: EventType) -> dict[str, Any]:
    """The Kafka headers of binary mode (the CloudEvents Kafka protocol binding)."""
    return {
        "type": "object",
        "required": [
            "ce_specversion",
            "ce_id",
            "ce_source",
            "ce_type",
            "ce_time",
            "ce_subject",
            "ce_dataschema",
            "content-type",
        ],
        "properties": {
            "ce_specversion": {"const": SPECVERSION},
            "ce_id": {
                "type": "string",
                "format": "uuid",
                "description": "stable across re-deliveries: drop repeats by it",
            },
            "ce_source": {"enum": _SOURCES, "description": "the writer of the change"},
            "ce_type": {"const": event_type.value},
            "ce_time": {
                "type": "string",
                "format": "date-time",
                "description": "commit time, RFC 3339 UTC with microseconds",
            },
            "ce_subject": {"type": "string", "description": "the record key"},
            "ce_dataschema": {"const": dataschema(event_type.value)},
            "content-type": {"const": CONTENT_TYPE},
        },
    }


def _message(event_type: EventType) -> dict[str, Any]:
    body = embedded_schema(event_type)
    title = body.pop("title")
    return {
        "name": event_type.value,
        "title": event_type.value,
        "summary": title,
        "contentType": CONTENT_TYPE,
        "headers": _headers(event_type),
        "payload": body,
        "correlationId": {"location": "$message.header#/ce_id"},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": _KEYS[event_type.topic]},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def document(
    prefix: str = DEFAULT_PREFIX, partitions: int = 3, replicas: int = 1
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document for topics ``<prefix>.images|blobs|tags``."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for topic in sorted({t.topic for t in EventType}):
        types = [t for t in EventType if t.topic == topic]
        for t in types:
            messages[_message_name(t)] = _message(t)
        channels[topic] = {
            "address": f"{prefix}.{topic}",
            "title": f"{prefix}.{topic}",
            "description": f"Key: {_KEYS[topic]}. One key lives in one partition: its "
            "events arrive in commit order.",
            "messages": {
                _message_name(t): {"$ref": f"#/components/messages/{_message_name(t)}"}
                for t in types
            },
            "bindings": {
                "kafka": {
                    "topic": f"{prefix}.{topic}",
                    "partitions": partitions,
                    "replicas": replicas,
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
        }
        operations[f"receive{topic.capitalize()}"] = {
            "action": "receive",
            "title": f"React to {topic} events",
            "channel": {"$ref": f"#/channels/{topic}"},
            "messages": [
                {"$ref": f"#/channels/{topic}/messages/{_message_name(t)}"} for t in types
            ],
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "registry-mirror change events",
            "version": DOCUMENT_VERSION,
            "description": "Every index change of registry-mirror as a CloudEvent 1.0 in Kafka "
            "binary mode (ce_* headers, the JSON data as the value), written in the transaction "
            "of the change and published at least once with a stable ce_id. The same events "
            "are readable without Kafka at /mirror/v1/events and /mirror/v1/events/stream.",
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "kafka": {
                "host": "kafka:9092",
                "protocol": "kafka",
                "description": "MIRROR_KAFKA_BOOTSTRAP; the topic prefix is "
                "MIRROR_KAFKA_TOPIC_PREFIX, compression MIRROR_KAFKA_COMPRESSION",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


if __name__ == "__main__":
    sys.stdout.write(orjson.dumps(document(), option=orjson.OPT_INDENT_2).decode() + "\n")
