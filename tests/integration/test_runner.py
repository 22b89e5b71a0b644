"""The composition root against real services: the simulator, PostgreSQL and (for the relay) Kafka.

``start_mirror`` starts the ingest loop, the API and, with Kafka configured, the
relay; leaving it stops them all: no task left, the pool closed, the port free.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from mirror.ingest.summary import IngestSummary
from mirror.model import Scope, ScopeKind
from mirror.runner.app import IngestHooks, Mirror, RunOptions, start_mirror
from mirror.settings import Settings
from mirror.upstream.simulator import RunningSimulator, SimulatorConfig, serve_simulator

IMAGES = 400
FIRST_PASS_TIMEOUT_S = 60.0
RELAY_TIMEOUT_S = 60.0

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    async with serve_simulator(SimulatorConfig(images=IMAGES, seed=7)) as running:
        yield running


def mirror_settings(settings: Settings, simulator: RunningSimulator) -> Settings:
    folders = simulator.registry.model.folder_ids
    return settings.with_(
        upstream_url=simulator.url,
        operation_url=simulator.url,
        scopes=tuple(Scope(ScopeKind.FOLDER, f) for f in folders),
        upstream_rps=1000.0,
    )


class FirstPass:
    """Ingest hooks that record the passes and signal the first one."""

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.summaries: list[IngestSummary] = []

    def hooks(self) -> IngestHooks:
        def on_pass(summary: IngestSummary) -> None:
            self.summaries.append(summary)
            self.done.set()

        return IngestHooks(on_pass=on_pass)

    async def wait(self) -> IngestSummary:
        await asyncio.wait_for(self.done.wait(), FIRST_PASS_TIMEOUT_S)
        return self.summaries[0]


async def get_json(url: str) -> dict:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, (url, response.status, await response.text())
        data: dict = await response.json()  # type: ignore[type-arg]
        return data


async def folded_stats(api_url: str) -> dict:  # type: ignore[type-arg]
    """/mirror/v1/stats once the mirror's folder has folded everything written so far."""
    for _ in range(300):
        stats = await get_json(f"{api_url}/mirror/v1/stats")
        if stats["behind"]["changes"] == "0" and stats["asOf"]["eventId"] != "0":
            return stats
        await asyncio.sleep(0.1)
    raise AssertionError(f"the stats never caught up: {stats}")


def port_is_free(url: str) -> bool:
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def test_the_mirror_ingests_serves_and_stops_everything(
    settings: Settings, simulator: RunningSimulator
) -> None:
    stop = asyncio.Event()
    first = FirstPass()
    options = RunOptions(port=0, interval=0.5)
    async with start_mirror(
        mirror_settings(settings, simulator), options, stop, hooks=first.hooks()
    ) as mirror:
        summary = await first.wait()
        assert summary.images == IMAGES and summary.created == IMAGES and not summary.failed
        stats = await folded_stats(mirror.api_url)
        assert stats["images"] == str(IMAGES)
        sync = await get_json(f"{mirror.api_url}/mirror/v1/sync")
        assert len(sync["scopes"]) == len(simulator.registry.model.folder_ids)
        registries = await get_json(f"{mirror.api_url}/dashboard/registries")
        assert sum(int(r["images"]) for r in registries["registries"]) == IMAGES
        assert set(mirror.tasks) == {"ingest loop", "stats folder"}  # no Kafka: no relay

        # churn upstream: a deletion reaches the index and the dashboard's feed
        gone = next(iter(simulator.registry.ids()))
        simulator.registry.delete(gone)
        for _ in range(200):
            deletions = await get_json(f"{mirror.api_url}/dashboard/deletions")
            if any(e["subject"] == gone for e in deletions.get("events", [])):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the upstream deletion never reached the index")
        tasks = list(mirror.tasks.values())

    assert stop.is_set()
    assert all(task.done() and not task.cancelled() for task in tasks)  # stopped, not killed
    assert all(task.exception() is None for task in tasks)
    assert mirror.pool.is_closing()
    assert port_is_free(mirror.api_url)


async def test_with_kafka_the_relay_publishes_every_event(
    settings: Settings, simulator: RunningSimulator, kafka_bootstrap: str
) -> None:
    stop = asyncio.Event()
    first = FirstPass()
    configured = mirror_settings(settings, simulator).with_(
        kafka_bootstrap=kafka_bootstrap, kafka_topic_prefix=f"runner-{uuid.uuid4().hex[:8]}"
    )
    async with start_mirror(
        configured, RunOptions(port=0, interval=3600), stop, hooks=first.hooks()
    ) as mirror:
        await first.wait()
        assert set(mirror.tasks) == {"ingest loop", "stats folder", "relay"}
        total = await mirror.pool.fetchval("SELECT count(*) FROM outbox")
        assert total >= IMAGES
        await wait_until_sent(mirror)
    assert all(task.done() and task.exception() is None for task in mirror.tasks.values())


async def wait_until_sent(mirror: Mirror) -> None:
    """The relay marks events sent only once Kafka acknowledged them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RELAY_TIMEOUT_S
    while loop.time() < deadline:
        unsent = await mirror.pool.fetchval(
            "SELECT count(*) FROM outbox_events WHERE sent_at IS NULL"
        )
        if unsent == 0:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{unsent} events still unsent after {RELAY_TIMEOUT_S:.0f}s")
