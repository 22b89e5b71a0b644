"""Probes: ``/healthz`` (the process answers) and ``/readyz`` (it can serve from the index).

Ready means the database answers and every migration in ``sql/`` is applied;
until then ``/readyz`` is 503 UNAVAILABLE in the upstream's error shape. Once
the migrations were seen applied they are not checked again (they only ever
get applied, never removed), so a ready probe costs one ``SELECT 1``.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from aiohttp import web

from mirror.api.appkeys import POOL
from mirror.api.jsonbody import json_response
from mirror.errors import Unavailable
from mirror.store.migrate import pending_migrations

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
PROBE_TIMEOUT = 2.0

MIGRATED = web.AppKey("migrations_seen_applied", list[bool])


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    seen = request.app[MIGRATED]
    try:
        async with asyncio.timeout(PROBE_TIMEOUT), request.app[POOL].acquire() as conn:
            await conn.fetchval("SELECT 1")
            if not seen[0]:
                pending = await pending_migrations(conn)
                if pending:
                    raise Unavailable(f"{len(pending)} migration(s) not applied yet")
                seen[0] = True
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("not ready: the database does not answer (%s)", type(exc).__name__)
        raise Unavailable("the index database does not answer") from None
    return json_response({"status": "ready"})


def add_health_routes(app: web.Application) -> None:
    app[MIGRATED] = [False]
    app.router.add_get(HEALTH_PATH, healthz, name="health")
    app.router.add_get(READY_PATH, readyz, name="ready")
