"""The event feed's filters and its Server-Sent Events stream (real PostgreSQL; events
written with the outbox writer the ingest uses)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from mirror.api.app import create_app
from mirror.api.event_stream import STREAM_OPTIONS, StreamOptions
from mirror.events.asyncapi import document
from mirror.events.schemas import data_schema
from mirror.model import Event, EventType
from mirror.settings import Settings
from mirror.store.outbox import append_events

FEED = "/mirror/v1/events"
STREAM = "/mirror/v1/events/stream"
API = "/registry-mirror/api"
INGEST = "/registry-mirror/ingest"


def sample_events(n: int, start: int = 0) -> list[Event]:
    """A mix of every topic and both sources, ``n`` events (valid by the event schemas)."""
    out: list[Event] = []
    for i in range(start, start + n):
        image = f"crp{i:017d}"
        tag = {"repository": "r1/app", "imageId": image, "digest": f"sha256:{i:064x}"}
        match i % 5:
            case 0:
                out.append(Event(EventType.IMAGE_CREATED, image, {"id": image, "runId": "1"}))
            case 1:
                data = {**tag, "tag": f"t{i % 3}"}
                out.append(Event(EventType.TAG_ADDED, f"r1/app:t{i % 3}", data))
            case 2:
                data = {**tag, "tag": "t0", "reason": "untagged"}
                out.append(Event(EventType.TAG_REMOVED, "r1/app:t0", data))
            case 3:
                data = {"image": {"id": image}, "reason": "api", "operationId": f"op{i}"}
                out.append(Event(EventType.IMAGE_DELETED, image, data, source=API))
            case _:
                digest = f"sha256:{i:064x}"
                data = {"digest": digest, "size": "1", "image": image}
                out.append(Event(EventType.BLOB_ADDED, digest, data))
    return out


async def write(pool: asyncpg.Pool, events: list[Event]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await append_events(conn, events)


@pytest.fixture
async def api(settings: Settings, db_pool: asyncpg.Pool) -> AsyncIterator[TestClient]:
    app = create_app(settings, pool=db_pool, upstream=None)
    app[STREAM_OPTIONS] = StreamOptions(heartbeat_s=0.3, poll_s=0.2)
    async with TestClient(TestServer(app)) as client:
        yield client


async def feed(api: TestClient, params: Any, status: int = 200) -> Any:
    response = await api.get(FEED, params=params)
    body = orjson.loads(await response.read())
    assert response.status == status, body
    return body


async def read_all(api: TestClient, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = "0"
    while True:
        page = await feed(api, [*params, ("after", after), ("limit", "7")])
        events += page.get("events", [])
        if page["next"] == after:
            return events
        after = page["next"]


async def test_feed_filters_by_type_prefix_subject_and_source(db_pool, api) -> None:  # type: ignore[no-untyped-def]
    await write(db_pool, sample_events(40))
    everything = await read_all(api, [])
    assert len(everything) == 40
    tags = await read_all(api, [("type", "registry.tag.*")])
    assert tags == [e for e in everything if e["type"].startswith("registry.tag.")]
    two = await read_all(api, [("type", "registry.image.deleted"), ("type", "registry.blob.*")])
    assert two == [
        e for e in everything if e["type"] in ("registry.image.deleted", "registry.blob.added")
    ]
    assert two and all(e["source"] in (API, INGEST) for e in two)
    by_api = await read_all(api, [("source", API)])
    assert by_api == [e for e in everything if e["source"] == API] and by_api
    one = await read_all(api, [("subject", "r1/app:t0"), ("type", "registry.tag.removed")])
    assert one == [
        e for e in everything if e["subject"] == "r1/app:t0" and e["type"] == "registry.tag.removed"
    ]
    # A filtered answer's cursor moves past the events it skipped.
    page = await feed(api, [("type", "registry.image.deleted"), ("limit", "1000")])
    assert page["next"] == str(await db_pool.fetchval("SELECT max(id) FROM outbox"))


async def test_feed_after_latest_starts_at_the_end(db_pool, api) -> None:  # type: ignore[no-untyped-def]
    await write(db_pool, sample_events(12))
    start = await feed(api, {"after": "latest"})
    assert "events" not in start
    await write(db_pool, sample_events(3, start=100))
    page = await feed(api, {"after": start["next"]})
    assert [e["subject"] for e in page["events"]] == [e.subject for e in sample_events(3, 100)]


@pytest.mark.parametrize(
    "params",
    [
        {"type": "registry.image.renamed"},
        {"type": "registry.nothing.*"},
        {"type": "image"},
        {"source": "/somewhere/else"},
        {"after": "yesterday"},
        {"limit": "0"},
        {"subject": "x" * 600},
    ],
)
async def test_feed_refuses_unknown_filter_values(db_pool, api, params) -> None:  # type: ignore[no-untyped-def]
    body = await feed(api, params, status=400)
    assert body["code"] == 3 and body["message"].startswith("invalid ")
    assert body["details"][0]["requestId"]


async def open_stream(
    api: TestClient, params: Any = None, last_event_id: str | None = None
) -> ClientResponse:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    response = await api.get(STREAM, params=params, headers=headers)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return response


async def next_message(response: ClientResponse) -> tuple[str | None, dict[str, Any] | None]:
    """(id, event) of the next SSE message; (None, None) for a heartbeat comment."""
    fields: dict[str, str] = {}
    while True:
        line = (await asyncio.wait_for(response.content.readline(), 10)).decode()
        assert line, "the stream ended"
        line = line.rstrip("\n")
        if line == "":
            if "data" in fields:
                return fields.get("id"), orjson.loads(fields["data"])
            continue  # the retry: preamble, or a heartbeat's end
        if line.startswith(":"):
            return None, None
        name, _, value = line.partition(": ")
        fields[name] = value


async def next_event(response: ClientResponse) -> tuple[str, dict[str, Any]]:
    while True:
        cursor, event = await next_message(response)
        if event is not None:
            assert cursor is not None
            return cursor, event


async def test_stream_resumes_after_a_disconnect_without_gap_or_repeat(db_pool, api) -> None:  # type: ignore[no-untyped-def]
    await write(db_pool, sample_events(30))
    params = [("type", "registry.tag.*"), ("type", "registry.image.created")]
    received: list[tuple[str, dict[str, Any]]] = []
    first = await open_stream(api, [*params, ("after", "0")])
    for _ in range(5):
        received.append(await next_event(first))
    first.close()  # the subscriber drops mid-stream
    await write(db_pool, sample_events(30, start=30))  # events arrive while it is away
    second = await open_stream(api, params, last_event_id=received[-1][0])
    want = await read_all(api, params)
    while len(received) < len(want):
        received.append(await next_event(second))
    # ... and new events arrive live on the open stream
    await write(db_pool, sample_events(5, start=60))
    want = await read_all(api, params)
    while len(received) < len(want):
        received.append(await next_event(second))
    second.close()
    assert [event for _, event in received] == want
    ids = [int(cursor) for cursor, _ in received]
    assert ids == sorted(set(ids))


async def test_stream_after_latest_sends_only_new_events_and_heartbeats(db_pool, api) -> None:  # type: ignore[no-untyped-def]
    await write(db_pool, sample_events(10))
    response = await open_stream(api, {"after": "latest", "type": "registry.image.deleted"})
    cursor, event = await next_message(response)
    assert (cursor, event) == (None, None)  # nothing new: a heartbeat comment
    await write(db_pool, sample_events(10, start=10))
    cursor, event = await next_event(response)
    assert event["type"] == "registry.image.deleted" and event["subject"] == f"crp{13:017d}"
    row = await db_pool.fetchval("SELECT id FROM outbox_events WHERE key = $1", event["subject"])
    assert cursor == str(row)
    response.close()


async def test_stream_refuses_a_bad_filter_or_cursor(db_pool, api) -> None:  # type: ignore[no-untyped-def]
    response = await api.get(STREAM, params={"type": "registry.bogus"})
    assert response.status == 400
    response = await api.get(STREAM, headers={"Last-Event-ID": "abc"})
    assert response.status == 400


async def test_schemas_and_asyncapi_are_served(db_pool, api) -> None:  # type: ignore[no-untyped-def]
    listing = await (await api.get("/mirror/v1/schemas")).json()
    assert {s["type"] for s in listing["schemas"]} == {t.value for t in EventType}
    for entry in listing["schemas"]:
        response = await api.get(entry["path"])
        assert response.status == 200
        assert await response.json() == data_schema(EventType(entry["type"]))
        assert entry["dataschema"] == (await response.json())["$id"]
    missing = await api.get("/mirror/v1/schemas/registry.image.renamed.json")
    assert missing.status == 404 and (await missing.json())["code"] == 5
    doc = await (await api.get("/asyncapi.json")).json()
    assert doc == orjson.loads(orjson.dumps(document()))  # the default prefix, 3 partitions
    # Events in the feed name their schema.
    await write(db_pool, sample_events(5))
    page = await feed(api, {})
    assert all(e["dataschema"] == data_schema(EventType(e["type"]))["$id"] for e in page["events"])
