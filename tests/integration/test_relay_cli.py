"""`mirror relay` and `mirror events tail` as a user runs them (subprocesses)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import orjson
import pytest

from mirror.events.relay import RelayOptions, run_relay
from mirror.model import Event, EventType
from mirror.settings import Settings
from tests.integration.relay_support import (
    ROOT,
    append,
    committed_events,
    keyed_events,
    relay_env,
    unsent_count,
)

# The relay is exercised with hand-made events (not checked against the event schemas).
pytestmark = pytest.mark.synthetic_events

COMMAND_TIMEOUT = 120


@pytest.fixture
def topic_prefix() -> str:
    return f"c{uuid.uuid4().hex[:12]}"


def mirror(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mirror", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
    )  # fmt: skip


def deleted(image_id: str, n: int) -> Event:
    return Event(
        EventType.IMAGE_DELETED, image_id, {"image": {"id": image_id}, "reason": "upstream-gone"}
    )


async def test_relay_without_kafka_says_events_stay_in_postgresql(
    database_url: str, tmp_path: Path
) -> None:
    env = relay_env(database_url, "", "p", tmp_path)
    del env["MIRROR_KAFKA_BOOTSTRAP"]
    done = await asyncio.to_thread(mirror, "relay", env=env)
    assert done.returncode == 2
    assert "MIRROR_KAFKA_BOOTSTRAP is not set" in done.stderr
    assert "/mirror/v1/events" in done.stderr


async def test_relay_once_drains_and_exits(
    db_pool: asyncpg.Pool,
    database_url: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    await append(db_pool, keyed_events(120, keys=7))
    env = relay_env(database_url, kafka_bootstrap, "ignored", tmp_path)
    done = await asyncio.to_thread(
        mirror, "relay", "--once", "--topic-prefix", topic_prefix, "--batch-size", "50", env=env
    )
    assert done.returncode == 0, done.stderr
    assert "published 120 events" in done.stderr
    assert await unsent_count(db_pool) == 0


async def test_events_tail_prints_cloudevents_as_json_lines(
    db_pool: asyncpg.Pool,
    settings: Settings,
    database_url: str,
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    events = keyed_events(10, keys=5)
    events[3:3] = [deleted("crpdeleted0000000001", 1)]
    events[8:8] = [deleted("crpdeleted0000000002", 2)]
    events.append(deleted("crpdeleted0000000003", 3))
    await append(db_pool, events, per_transaction=4)
    relay_settings = settings.with_(
        kafka_bootstrap=kafka_bootstrap, kafka_topic_prefix=topic_prefix
    )
    options = RelayOptions(poll_interval=0.2)
    await run_relay(db_pool, relay_settings, stop=asyncio.Event(), once=True, options=options)
    ids = {r["key"]: r["event_id"] for r in await committed_events(db_pool)}

    env = relay_env(database_url, kafka_bootstrap, topic_prefix, tmp_path)
    tail = ["events", "tail", "--from-beginning", "--type", "registry.image.deleted"]
    done = await asyncio.to_thread(mirror, *tail, "--limit", "3", env=env)
    assert done.returncode == 0, done.stderr
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert sorted(e["subject"] for e in lines) == [
        "crpdeleted0000000001", "crpdeleted0000000002", "crpdeleted0000000003",
    ]  # fmt: skip
    for event in lines:
        assert event["specversion"] == "1.0"
        assert event["type"] == "registry.image.deleted"
        assert event["id"] == ids[event["subject"]]
        assert event["source"] and event["time"].endswith("Z")
        assert event["datacontenttype"] == "application/json"
        assert event["data"]["reason"] == "upstream-gone"

    # A group resumes where it left off: the offsets were committed after printing.
    group = ["--group", f"g{uuid.uuid4().hex[:8]}"]
    first = await asyncio.to_thread(mirror, *tail, *group, "--limit", "2", env=env)
    assert first.returncode == 0, first.stderr
    await append(db_pool, [deleted("crpdeleted0000000004", 4)])
    await run_relay(db_pool, relay_settings, stop=asyncio.Event(), once=True, options=options)
    second = await asyncio.to_thread(mirror, *tail, *group, "--limit", "2", env=env)
    assert second.returncode == 0, second.stderr
    printed = [orjson.loads(line)["subject"] for line in first.stdout.splitlines()]
    printed += [orjson.loads(line)["subject"] for line in second.stdout.splitlines()]
    assert sorted(printed) == [f"crpdeleted000000000{n}" for n in (1, 2, 3, 4)]


async def test_events_tail_rejects_an_unknown_type(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = relay_env("postgresql://unused/db", kafka_bootstrap, "p", tmp_path)
    done = await asyncio.to_thread(mirror, "events", "tail", "--type", "registry.nope", env=env)
    assert done.returncode == 2
    assert "unknown event type" in done.stderr
