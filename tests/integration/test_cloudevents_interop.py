"""Interoperability: every Kafka record of a run, decoded by the CNCF ``cloudevents`` SDK's
Kafka binding (``cloudevents.core.bindings.kafka`` in cloudevents 2.x), is the event the
feed serves, and each ``MIRROR_KAFKA_COMPRESSION`` codec reaches a plain consumer
(real PostgreSQL, real Kafka, the upstream simulator)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat

from mirror.api.app import create_app
from mirror.events.relay import RelayOptions, run_relay
from mirror.ingest.loop import ingest_once
from mirror.model import Event, EventType, Scope, ScopeKind
from mirror.settings import Settings
from mirror.store.outbox import append_events
from mirror.upstream.client import UpstreamClient
from mirror.upstream.simulator import SimulatorConfig, serve_simulator
from tests.integration.relay_support import Delivered, read_topics

OPTIONS = RelayOptions(batch_size=500, poll_interval=0.2, lock_poll_interval=0.2)


def sdk_event(record: Delivered) -> Any:
    """The record as the SDK's Kafka binding reads it."""
    message = KafkaMessage(headers=record.headers, key=record.key.encode(), value=record.value)
    return from_binary(message, JSONFormat())


def as_feed_event(event: Any) -> dict[str, Any]:
    attributes = event.get_attributes()
    return {
        "specversion": attributes["specversion"],
        "id": attributes["id"],
        "source": attributes["source"],
        "type": attributes["type"],
        "subject": attributes["subject"],
        "time": attributes["time"],
        "datacontenttype": attributes["datacontenttype"],
        "dataschema": attributes["dataschema"],
        "data": event.get_data(),
        "partitionkey": attributes["partitionkey"],
    }


async def feed(api: TestClient) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = "0"
    while True:
        response = await api.get("/mirror/v1/events", params={"after": after, "limit": "1000"})
        page = orjson.loads(await response.read())
        events += page.get("events", [])
        if page["next"] == after:
            return events
        after = page["next"]


async def test_every_record_decodes_with_the_cloudevents_sdk_as_the_feed_has_it(
    settings: Settings, db_pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    prefix = f"ce{uuid.uuid4().hex[:12]}"
    config = SimulatorConfig(images=400, seed=5, operation_delay=0.01)
    async with serve_simulator(config) as upstream, aiohttp.ClientSession() as session:
        settings = settings.with_(
            upstream_url=upstream.url,
            operation_url=upstream.url,
            kafka_bootstrap=kafka_bootstrap,
            kafka_topic_prefix=prefix,
        )
        assert settings.kafka_compression == "zstd"  # the default, which plain aiokafka lacks
        client = UpstreamClient(session, settings)
        scopes = [Scope(ScopeKind.FOLDER, f) for f in upstream.registry.model.folder_ids]
        await ingest_once(db_pool, client, scopes)
        truth = upstream.registry
        images = list(truth.all_images(scopes[0]))
        tagged = next(i for i in images if i.tags)
        other = next(i for i in images if i.name == tagged.name and i.id != tagged.id)
        truth.retag(other.id, add=[tagged.tags[0]])  # a tag moves: registry.tag.added
        truth.delete(images[-1].id)  # confirmed gone by the next walk
        await ingest_once(db_pool, client, scopes)
        async with TestClient(
            TestServer(create_app(settings, pool=db_pool, upstream=client))
        ) as api:
            victim = images[len(images) // 2].id
            response = await api.delete(f"/container-registry/v1/images/{victim}")
            assert response.status == 200
            operation = await response.json()
            for _ in range(500):
                polled = await (await api.get(f"/operations/{operation['id']}")).json()
                if polled["done"]:
                    break
                await asyncio.sleep(0.01)
            await run_relay(db_pool, settings, stop=asyncio.Event(), once=True, options=OPTIONS)
            expected = await feed(api)
    types = {e["type"] for e in expected}
    assert {"registry.tag.added", "registry.image.deleted", "registry.blob.added"} <= types
    assert {e["source"] for e in expected} == {"/registry-mirror/ingest", "/registry-mirror/api"}

    records = await read_topics(kafka_bootstrap, prefix, expect_ids={e["id"] for e in expected})
    decoded = {}
    for record in records:
        event = as_feed_event(sdk_event(record))
        assert record.topic == f"{prefix}.{EventType(event['type']).topic}"
        decoded.setdefault(event["id"], event)
    assert len(decoded) == len(expected)
    for want in expected:
        got = decoded[want["id"]]
        assert got["partitionkey"] == want["subject"]  # the record key
        assert got["time"] == datetime.fromisoformat(want["time"])
        del got["partitionkey"]
        assert got | {"time": want["time"]} == want


@pytest.mark.parametrize("codec", ["gzip", "lz4", "snappy", "none"])
async def test_each_compression_setting_reaches_a_plain_consumer(
    settings: Settings, db_pool: asyncpg.Pool, kafka_bootstrap: str, codec: str
) -> None:
    prefix = f"cz{uuid.uuid4().hex[:12]}"
    env = {"MIRROR_KAFKA_COMPRESSION": codec}
    relay_settings = settings.with_(
        kafka_bootstrap=kafka_bootstrap,
        kafka_topic_prefix=prefix,
        kafka_compression=Settings.load(env=env).kafka_compression,
    )
    data = {"repository": "r1/app", "tag": "latest", "imageId": "crp1", "digest": "sha256:ab"}
    async with db_pool.acquire() as conn, conn.transaction():
        await append_events(conn, [Event(EventType.TAG_ADDED, "r1/app:latest", data)])
    await run_relay(db_pool, relay_settings, stop=asyncio.Event(), once=True, options=OPTIONS)
    (record,) = await read_topics(kafka_bootstrap, prefix, expect_ids=set(), limit=30)
    records = [record]
    event = sdk_event(records[0])
    assert event.get_type() == "registry.tag.added" and event.get_data() == data
