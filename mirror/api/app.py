"""The local API's composition root: ``create_app(settings, *, pool=None, upstream=None)``.

Resources are opened in one ``cleanup_ctx`` and closed there in reverse order:
the database pool (opened and migrated from the Settings unless one is given),
the upstream client with its HTTP session (unless one is given), the page-token
keys, and the background task that follows pending Delete operations. What the
caller passes in, the caller closes.

Middlewares, outermost first: metrics (every request, errors included), the
error renderer (request id, upstream error JSON), then token auth when
``MIRROR_API_TOKENS`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

import aiohttp
import asyncpg
from aiohttp import web
from aiohttp.typedefs import Middleware

from mirror.api.appkeys import (
    DELETES,
    IMAGES,
    PAGE_KEYS,
    POOL,
    PUBLIC_PATHS,
    SETTINGS,
    UPSTREAM,
)
from mirror.api.auth import TokenTable, auth_middleware
from mirror.api.blobs import add_blob_routes
from mirror.api.dashboard import add_dashboard_routes
from mirror.api.event_stream import add_stream_routes
from mirror.api.events_feed import add_events_routes
from mirror.api.health import HEALTH_PATH, READY_PATH, add_health_routes
from mirror.api.image_list import ImageReader
from mirror.api.images import add_image_routes
from mirror.api.metrics import metrics_handler, metrics_middleware
from mirror.api.middleware import error_middleware
from mirror.api.openapi import OPENAPI_PATH, openapi_handler
from mirror.api.operations import DeleteTracker, OperationsUpstream
from mirror.api.page_cache import page_cache
from mirror.api.page_keys import PageKeys
from mirror.api.schema_routes import add_schema_routes
from mirror.api.stats_handlers import add_stats_routes
from mirror.api.sync_status import add_sync_routes
from mirror.settings import Settings
from mirror.store.database import open_database
from mirror.upstream.client import UpstreamClient

log = logging.getLogger(__name__)


METRICS_PATH = "/metrics"
POLL_INTERVAL_S = 2.0
# A client request body is never needed (Delete has none): keep the limit small.
CLIENT_MAX_SIZE = 64 * 1024
# A connection whose request headers are not complete this long after it opened (or
# after its previous answer) is closed: aiohttp's keep-alive timeout, which also
# covers a request still being received (aiohttp has no header-read timeout of its own).
IDLE_TIMEOUT_S = 30.0


def create_app(
    settings: Settings,
    *,
    pool: asyncpg.Pool | None = None,
    upstream: OperationsUpstream | None = None,
    idle_timeout: float = IDLE_TIMEOUT_S,
) -> web.Application:
    """The API app. ``pool``/``upstream`` given: used as they are and left open on exit.

    Serve it with ``mirror.api.server.ApiRunner``, which answers what aiohttp's
    parser refuses in the upstream's error JSON too.
    """
    middlewares: list[Middleware] = [metrics_middleware, error_middleware]
    if settings.api_tokens:
        middlewares.append(auth_middleware(TokenTable(settings.api_tokens)))
    app = web.Application(
        middlewares=middlewares,
        client_max_size=CLIENT_MAX_SIZE,
        handler_args={"keepalive_timeout": idle_timeout},
    )
    app[SETTINGS] = settings
    app[PUBLIC_PATHS] = {HEALTH_PATH, READY_PATH, OPENAPI_PATH}
    app.cleanup_ctx.append(_resources(pool, upstream))

    add_image_routes(app)
    add_blob_routes(app)
    add_sync_routes(app)
    add_events_routes(app)
    add_stream_routes(app)
    add_schema_routes(app)
    add_stats_routes(app)
    add_health_routes(app)
    app.router.add_get(METRICS_PATH, metrics_handler, name="metrics")
    app.router.add_get(OPENAPI_PATH, openapi_handler, name="openapi")
    add_dashboard_routes(app)
    return app


def _resources(
    pool: asyncpg.Pool | None, upstream: OperationsUpstream | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def resources(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        async with AsyncExitStack() as stack:
            app[POOL] = pool or await stack.enter_async_context(
                open_database(settings, reset=keep_session)
            )
            if upstream is not None:
                app[UPSTREAM] = upstream
            else:
                session = await stack.enter_async_context(aiohttp.ClientSession())
                app[UPSTREAM] = UpstreamClient(session, settings)
            async with app[POOL].acquire() as conn:
                app[PAGE_KEYS] = await PageKeys.load(conn)
            app[IMAGES] = ImageReader(app[POOL], app[PAGE_KEYS], page_cache(settings))
            app[DELETES] = DeleteTracker(app[POOL], app[UPSTREAM])
            background = asyncio.create_task(_follow_deletes(app), name="api: follow deletes")
            stack.push_async_callback(_cancel, background)
            yield

    return resources


async def keep_session(conn: asyncpg.Connection) -> None:
    """Release a pooled connection without asyncpg's reset query (one round trip a request).

    The API leaves no session state behind: no SET, LISTEN or session advisory
    lock, and transactions are context managers (asyncpg still rolls back any
    transaction left open before calling this).
    """


async def _follow_deletes(app: web.Application) -> None:
    """Settle pending Delete operations even if no client asks."""
    tracker = app[DELETES]
    while True:
        try:
            await tracker.poll_pending()
        except asyncio.CancelledError:
            raise
        except Exception:
            # The next round retries; a dead loop would leave deletes unsettled forever.
            log.exception("following pending delete operations failed")
        await asyncio.sleep(POLL_INTERVAL_S)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
