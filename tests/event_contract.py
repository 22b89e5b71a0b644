"""Every event the suite produces, checked against its published JSON Schema.

``tests/conftest.py`` runs ``outbox_violations`` on each test's database before
dropping it: an event the product wrote whose ``data`` does not match the schema
of its type, or whose subject or topic does not fit, fails that test. Tests that
write hand-made events to exercise the relay mark themselves
``@pytest.mark.synthetic_events``.
"""

from __future__ import annotations

from functools import cache

import asyncpg
import orjson
from jsonschema import Draft202012Validator

from mirror.events.schemas import data_schema
from mirror.model import EventType

SELECT_OUTBOX = "SELECT id, topic, key, type, data::text AS data FROM outbox_events ORDER BY id"
MAX_REPORTED = 5


@cache
def validator(event_type: EventType) -> Draft202012Validator:
    schema = data_schema(event_type)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def violations(topic: str, key: str, type_: str, data: object) -> list[str]:
    """What is wrong with one event (nothing: [])."""
    try:
        event_type = EventType(type_)
    except ValueError:
        return [f"unknown type {type_!r}"]
    problems = [
        f"{type_} {key}: data{''.join(f'[{p!r}]' for p in error.absolute_path)}: {error.message}"
        for error in validator(event_type).iter_errors(data)
    ]
    if topic != event_type.topic:
        problems.append(f"{type_} {key}: on topic {topic!r}")
    if isinstance(data, dict):
        if event_type.topic == "tags" and key != f"{data.get('repository')}:{data.get('tag')}":
            problems.append(f"{type_} {key}: key is not <repository>:<tag>")
        if event_type.topic == "blobs" and key != data.get("digest"):
            problems.append(f"{type_} {key}: key is not the digest")
    return problems


async def outbox_violations(conn: asyncpg.Connection) -> tuple[int, list[str]]:
    """(events checked, the first few problems) of a database's outbox."""
    rows = await conn.fetch(SELECT_OUTBOX)
    problems: list[str] = []
    for row in rows:
        problems += violations(row["topic"], row["key"], row["type"], orjson.loads(row["data"]))
        if len(problems) >= MAX_REPORTED:
            break
    return len(rows), problems[:MAX_REPORTED]
