"""The composition root of ``mirror run`` and ``mirror demo``: one place that wires everything.

Start order: the database (the embedded PostgreSQL when no URL is set), the
HTTP client session and the upstream client, the API site, then the background
work: the ingest loop, the stats folder, and the relay when Kafka is configured (without Kafka the
events stay in the outbox and are read at ``/mirror/v1/events``).

Stop order is the reverse, whatever the reason for stopping (a signal, a failed
task, an error while starting): the background tasks are asked to stop and
given ``stop_timeout`` to finish their transaction before they are cancelled,
then the API site, the session, the pool and the embedded PostgreSQL close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from mirror.api.app import create_app
from mirror.api.bind import check_bind
from mirror.api.server import ApiRunner
from mirror.api.tls import server_ssl_context
from mirror.errors import BackgroundTaskFailed
from mirror.events.relay import run_relay
from mirror.grpc_api.server import start_for_app
from mirror.heap import freeze_startup_heap
from mirror.ingest.loop import run_ingest_loop, upkeep_after
from mirror.ingest.progress import WalkProgress
from mirror.ingest.summary import IngestSummary
from mirror.listen import start_site
from mirror.settings import Settings
from mirror.signals import stop_on_signals
from mirror.stats.folder import run_folder
from mirror.store.database import open_database
from mirror.store.owner import own_data_dir
from mirror.upstream.client import UpstreamClient

log = logging.getLogger(__name__)

# The pool serves the API's queries, the ingest workers and the relay's session
# (which holds one connection for as long as it is the active relay).
POOL_SIZE = 16


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How the one-process mirror runs (the Settings say what it talks to)."""

    host: str = "127.0.0.1"
    port: int = 8080
    insecure: bool = False  # allow a non-loopback bind without API tokens
    interval: float = 60.0  # seconds between the starts of two ingest passes
    stop_timeout: float = 15.0  # grace for the background tasks to finish when stopping


@dataclass(slots=True)
class Mirror:
    """A started mirror: what the caller may print or poll while it runs."""

    settings: Settings
    pool: asyncpg.Pool
    upstream: UpstreamClient
    api_url: str
    grpc_address: str | None = None  # host:port of the gRPC API; None when MIRROR_GRPC_PORT=off
    tasks: dict[str, asyncio.Task[Any]] = field(default_factory=dict)

    async def wait(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set or a background task ends; a task's failure is raised."""
        stopper = asyncio.create_task(stop.wait(), name="stop signal")
        try:
            done, _ = await asyncio.wait(
                [stopper, *self.tasks.values()], return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopper.cancel()
        for name, task in self.tasks.items():
            if task in done and not task.cancelled():
                error = task.exception()
                if error is not None:
                    raise BackgroundTaskFailed(name) from error
                if not stop.is_set():
                    log.warning("%s ended on its own; stopping the mirror", name)


@dataclass(frozen=True, slots=True)
class IngestHooks:
    """What the caller sees of the ingest loop: walk progress, and each pass's summary."""

    progress: WalkProgress | None = None
    on_pass: Callable[[IngestSummary], Awaitable[None] | None] | None = None


@asynccontextmanager
async def start_mirror(
    settings: Settings,
    options: RunOptions,
    stop: asyncio.Event,
    *,
    hooks: IngestHooks | None = None,
) -> AsyncIterator[Mirror]:
    """Start the whole mirror; leaving the block stops it all, in reverse order."""
    check_bind(settings, options.host, options.insecure)
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(open_database(settings, max_size=POOL_SIZE))
        session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        )
        upstream = UpstreamClient(session, settings)
        api_url, grpc_address = await _start_api(stack, settings, pool, upstream, options)
        mirror = Mirror(
            settings=settings,
            pool=pool,
            upstream=upstream,
            api_url=api_url,
            grpc_address=grpc_address,
        )
        stack.push_async_callback(_stop_tasks, mirror.tasks, stop, options.stop_timeout)
        _start_task(
            mirror,
            "ingest loop",
            run_ingest_loop(
                pool,
                upstream,
                settings,
                interval=options.interval,
                stop=stop,
                progress=hooks.progress if hooks else None,
                on_pass=_after_pass(settings, pool, hooks.on_pass if hooks else None),
            ),
        )
        _start_task(mirror, "stats folder", run_folder(pool, stop))
        if settings.kafka_bootstrap is not None:
            _start_task(mirror, "relay", _relay(pool, settings, stop))
        else:
            log.info(
                "MIRROR_KAFKA_BOOTSTRAP is not set: events stay in PostgreSQL, read them at %s",
                f"{api_url}/mirror/v1/events",
            )
        yield mirror
        stop.set()


OnPass = Callable[[IngestSummary], Awaitable[None] | None]


def _after_pass(settings: Settings, pool: asyncpg.Pool, on_pass: OnPass | None) -> OnPass:
    """The caller's ``on_pass``, then the database's upkeep after a pass
    (``mirror.store.maintenance``: the indexes a first mirror filled built again; on the
    embedded PostgreSQL, its WAL removed now, not at the next timed checkpoint); the next
    pass waits for them."""

    async def after(summary: IngestSummary) -> None:
        if on_pass is not None:
            maybe = on_pass(summary)
            if maybe is not None:
                await maybe
        await upkeep_after(pool, summary, settings)

    return after


async def _start_api(
    stack: AsyncExitStack,
    settings: Settings,
    pool: asyncpg.Pool,
    upstream: UpstreamClient,
    options: RunOptions,
) -> tuple[str, str | None]:
    """Start the HTTP API and the gRPC API beside it; their URL and address."""
    app = create_app(settings, pool=pool, upstream=upstream)
    # Open requests get a short grace when stopping; the feed and stats answer in ms.
    runner = ApiRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    url = await start_site(
        runner, options.host, options.port, ssl_context=server_ssl_context(settings)
    )
    log.info("API listening on %s", url)
    grpc_listener = await start_for_app(app, options.host)
    freeze_startup_heap()
    if grpc_listener is None:
        return url, None
    stack.push_async_callback(grpc_listener.stop)
    return url, grpc_listener.address


def _start_task(mirror: Mirror, name: str, work: Coroutine[Any, Any, Any]) -> None:
    mirror.tasks[name] = asyncio.create_task(work, name=name)


async def _stop_tasks(
    tasks: dict[str, asyncio.Task[Any]], stop: asyncio.Event, grace: float
) -> None:
    """Ask the tasks to stop, give them ``grace`` seconds to finish, then cancel what is left."""
    stop.set()
    pending = [task for task in tasks.values() if not task.done()]
    if pending:
        _, late = await asyncio.wait(pending, timeout=grace)
        for task in late:
            log.warning("%s did not stop within %.0fs; cancelling it", task.get_name(), grace)
            task.cancel()
        if late:
            await asyncio.wait(late)
    for name, task in tasks.items():
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.debug("%s had failed: %r", name, task.exception())


async def _relay(pool: asyncpg.Pool, settings: Settings, stop: asyncio.Event) -> None:
    await run_relay(pool, settings, stop=stop)


def owning_data_dir(settings: Settings, command: str) -> contextlib.AbstractContextManager[None]:
    """A whole mirror owns its embedded data dir (DataDirBusy if another one does);
    with MIRROR_DATABASE_URL there is nothing to own."""
    if settings.embedded_database:
        return own_data_dir(settings.data_dir, command)
    return contextlib.nullcontext()


async def run_until_stopped(
    settings: Settings,
    options: RunOptions,
    *,
    stop: asyncio.Event | None = None,
    on_started: Callable[[Mirror], Awaitable[None]] | None = None,
) -> None:
    """``mirror run``: start the mirror, wait for a signal or a failure, stop it all."""
    stop = stop or asyncio.Event()
    with owning_data_dir(settings, "mirror run"), stop_on_signals(stop):
        async with start_mirror(settings, options, stop) as mirror:
            if on_started is not None:
                await on_started(mirror)
            await mirror.wait(stop)
