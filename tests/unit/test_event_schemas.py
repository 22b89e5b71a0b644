"""The published event contracts: the JSON Schemas of event data, and the AsyncAPI 3.0
document, validated against the AsyncAPI 3.0 specification's own JSON Schema
(vendored from the npm package @asyncapi/specs, see tests/data/README.md)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator, Draft202012Validator

from mirror.events.asyncapi import document
from mirror.events.schemas import all_schemas, dataschema
from mirror.ingest.changes import image_created, image_deleted, image_updated, run_origin
from mirror.ingest.tags import TagRef, added_event, removed_event
from mirror.model import EventType
from tests.event_contract import violations

ROOT = Path(__file__).resolve().parents[2]
ASYNCAPI_SPEC = ROOT / "tests" / "data" / "asyncapi-3.0.0.schema.json"
ASYNCAPI_DOC = ROOT / "docs" / "asyncapi.json"

IMAGE = {
    "id": "crp00000000000000001",
    "name": "reg1/app",
    "digest": "sha256:" + "a" * 64,
    "compressedSize": "1234",
    "config": {"id": "cfg", "digest": "sha256:" + "c" * 64, "size": "12"},
    "layers": [{"id": "l1", "digest": "sha256:" + "d" * 64, "size": "1000"}],
    "tags": ["v1", "latest"],
    "createdAt": "2025-03-04T05:06:07.123456789Z",
}


def asyncapi_validator() -> Draft7Validator:
    spec = json.loads(ASYNCAPI_SPEC.read_text())
    assert spec["title"] == "AsyncAPI 3.0.0 schema."
    return Draft7Validator(spec)


def test_every_type_has_a_valid_schema_with_its_dataschema_id() -> None:
    schemas = all_schemas()
    assert set(schemas) == {t.value for t in EventType}
    for name, schema in schemas.items():
        Draft202012Validator.check_schema(schema)
        assert schema["$id"] == dataschema(name)


def test_events_of_the_code_match_their_schemas() -> None:
    origin = run_origin(42)
    ref = TagRef("reg1/app", "latest", IMAGE["id"], IMAGE["digest"])
    events = [
        image_created(IMAGE),
        image_updated(IMAGE | {"tags": ["v1"]}, IMAGE),
        image_deleted(IMAGE, "upstream-gone"),
        added_event(ref, "crp00000000000000002", "/registry-mirror/ingest"),
        removed_event(ref, "image-deleted", "/registry-mirror/ingest"),
    ]
    for event in events:
        data = {**event.data, **origin}
        assert violations(event.topic, event.subject, event.type.value, data) == []


@pytest.mark.parametrize(
    ("type_", "key", "data", "expected"),
    [
        ("registry.tag.added", "r:t", {"repository": "r", "tag": "t"}, "'imageId' is a required"),
        ("registry.tag.removed", "r:t", {"repository": "r", "tag": "t", "imageId": "crp1",
         "digest": "d", "reason": "moved"}, "is not one of"),
        ("registry.image.deleted", "crp1", {"image": {"id": "crp1"}, "reason": "api",
         "actor": {"role": "admin", "token": "secret"}}, "Additional properties"),
        ("registry.blob.added", "sha256:x", {"digest": "sha256:x", "size": 12, "image": "c"},
         "is not of type 'string'"),
        ("registry.tag.added", "r:other", {"repository": "r", "tag": "t", "imageId": "crp1",
         "digest": "d"}, "key is not <repository>:<tag>"),
    ],
)  # fmt: skip
def test_a_wrong_event_is_caught(type_: str, key: str, data: dict[str, Any], expected: str) -> None:
    topic = EventType(type_).topic
    problems = violations(topic, key, type_, data)
    assert problems and any(expected in p for p in problems), problems


def test_the_asyncapi_document_is_valid_asyncapi_3() -> None:
    validator = asyncapi_validator()
    doc = document()
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
    assert errors == []
    assert doc["asyncapi"] == "3.0.0"
    assert {c["address"] for c in doc["channels"].values()} == {
        "registry-mirror.images",
        "registry-mirror.blobs",
        "registry-mirror.tags",
    }
    names = {m["name"] for m in doc["components"]["messages"].values()}
    assert names == {t.value for t in EventType}
    # The validator does reject a document that breaks the specification.
    broken = copy.deepcopy(doc)
    broken["channels"]["tags"]["address"] = 42
    del broken["info"]["version"]
    assert len(list(validator.iter_errors(broken))) >= 2


def test_docs_asyncapi_json_is_the_generated_document() -> None:
    # Regenerate with: python -m mirror.events.asyncapi > docs/asyncapi.json
    assert json.loads(ASYNCAPI_DOC.read_text()) == document()


def test_message_payloads_are_the_published_data_schemas() -> None:
    doc = document(prefix="acme")
    for message in doc["components"]["messages"].values():
        schema = all_schemas()[message["name"]]
        assert message["payload"]["properties"] == schema["properties"]
        headers = message["headers"]["properties"]
        assert headers["ce_type"] == {"const": message["name"]}
        assert headers["ce_dataschema"] == {"const": dataschema(message["name"])}
