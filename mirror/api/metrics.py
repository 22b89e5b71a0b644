"""Prometheus metrics: request latency per route, and index/outbox lag read at scrape time.

``/metrics`` exposes prometheus_client's default registry, so the counters the
ingest and the relay register there (``mirror run`` keeps them in the same
process) appear next to the API's own. The lag gauges come from the database
at each scrape, so a standalone ``mirror serve`` reports them too.

Under ``mirror serve --workers N`` every process keeps its metrics in files of one
directory (prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``,
set by ``mirror.runner.workers`` before the metrics exist), and ``/metrics``
answers their sum over the processes, whichever process takes the scrape. The
lag gauges are set by the scraping process: the most recent value counts. The
process collectors (``process_*``, ``python_gc_*``) are left out there: they
would describe only the process that answered.
"""

from __future__ import annotations

import logging
import os
import time

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from mirror.api.appkeys import POOL
from mirror.events.pending import SENT_UP_TO

log = logging.getLogger(__name__)


# Seconds; the gRPC API's histogram (mirror.grpc_api.metrics) uses the same.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
REQUEST_SECONDS = Histogram(
    "mirror_api_request_duration_seconds",
    "Local API request latency by route.",
    ("method", "route", "status"),
    buckets=LATENCY_BUCKETS,
)
OUTBOX_BACKLOG = Gauge(
    "mirror_db_outbox_unsent_events",
    "Outbox events not yet published to Kafka (upper bound: id span of the unsent rows).",
    multiprocess_mode="mostrecent",
)
OUTBOX_OLDEST_AGE = Gauge(
    "mirror_db_outbox_oldest_unsent_age_seconds",
    "Age of the oldest outbox event not yet published (0 when none).",
    multiprocess_mode="mostrecent",
)
SCOPE_SYNC_AGE = Gauge(
    "mirror_db_scope_last_complete_age_seconds",
    "Seconds since each scope's last complete walk.",
    ("scope",),
    multiprocess_mode="mostrecent",
)
SCOPE_FAILING = Gauge(
    "mirror_db_scope_last_walk_failed",
    "1 when the scope's latest walk failed after its last complete one.",
    ("scope",),
    multiprocess_mode="mostrecent",
)

# Both read through primary keys (outbox_sent's, the outbox's): no count over the outbox.
SELECT_OUTBOX_LAG = f"""
WITH oldest AS (SELECT id, time FROM outbox WHERE id > {SENT_UP_TO} ORDER BY id LIMIT 1)
SELECT coalesce((SELECT max(id) FROM outbox) - (SELECT id FROM oldest) + 1, 0) AS backlog,
       coalesce(extract(epoch FROM now() - (SELECT time FROM oldest)), 0)::float8 AS oldest_age
"""
SELECT_SCOPE_LAG = """
SELECT scope,
       extract(epoch FROM now() - last_complete_at)::float8 AS age,
       (last_error_at IS NOT NULL
        AND (last_complete_at IS NULL OR last_error_at > last_complete_at)) AS failing
FROM scopes
"""


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Time every request under its route's pattern (``/images/{imageId}``, not the id)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        _request_seconds(request.method, route, status).observe(time.perf_counter() - started)


# The histogram's child of each (method, route, status): labels() validates and locks on
# every call (~5 us a request, timeit), a dict lookup does not. It holds what the
# histogram itself holds, one entry per combination seen.
_CHILDREN: dict[tuple[str, str, int], Histogram] = {}


def _request_seconds(method: str, route: str, status: int) -> Histogram:
    key = (method, route, status)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = REQUEST_SECONDS.labels(method, route, str(status))
    return child


async def metrics_handler(request: web.Request) -> web.Response:
    """The default registry in the Prometheus text format."""
    try:
        await refresh_database_gauges(request.app[POOL])
    except (OSError, asyncpg.PostgresError) as exc:
        # Metrics must still answer when the database does not: the gauges keep their last values.
        log.warning("metrics: cannot read lag from the database: %s", type(exc).__name__)
    response = web.Response(body=generate_latest(exposition_registry()))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def exposition_registry() -> CollectorRegistry:
    """The default registry; with ``PROMETHEUS_MULTIPROC_DIR`` set (``mirror serve
    --workers``), one that sums the metrics of every process writing there."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return registry


async def refresh_database_gauges(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        outbox = await conn.fetchrow(SELECT_OUTBOX_LAG)
        scopes = await conn.fetch(SELECT_SCOPE_LAG)
    OUTBOX_BACKLOG.set(outbox["backlog"] if outbox else 0)
    OUTBOX_OLDEST_AGE.set(outbox["oldest_age"] if outbox else 0)
    for row in scopes:
        if row["age"] is not None:
            SCOPE_SYNC_AGE.labels(row["scope"]).set(row["age"])
        SCOPE_FAILING.labels(row["scope"]).set(1 if row["failing"] else 0)
