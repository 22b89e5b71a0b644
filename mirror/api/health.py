"""Probes: ``/healthz`` (the process answers) and ``/readyz`` (it can serve from the index).

Ready means the database answers and every migration in ``sql/`` is applied;
until then ``/readyz`` is 503 UNAVAILABLE in the upstream's error shape. Once
the migrations were seen applied they are not checked again (they only ever
get applied, never removed), so a ready probe costs one ``SELECT 1``. The gRPC
health service asks the same ``check_ready`` (``mirror.grpc_api.health``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from mirror.api.appkeys import POOL
from mirror.api.jsonbody import json_response
from mirror.errors import Unavailable
from mirror.store.migrate import count_steps, pending_migrations

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
PROBE_TIMEOUT = 2.0


@dataclass(slots=True)
class Readiness:
    """Whether the migrations were seen all applied (then they need no checking again)."""

    migrated: bool = False


READINESS = web.AppKey("readiness", Readiness)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    await check_ready(request.app[POOL], request.app[READINESS])
    return json_response({"status": "ready"})


async def check_ready(pool: asyncpg.Pool, readiness: Readiness) -> None:
    """Returns when the index can serve; ``Unavailable`` saying why not (``/readyz``, gRPC health)."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT), pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
            if not readiness.migrated:
                pending = await pending_migrations(conn)
                if pending:
                    raise Unavailable(f"{count_steps(pending)} not applied yet")
                readiness.migrated = True
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("not ready: the database does not answer (%s)", type(exc).__name__)
        raise Unavailable("the index database does not answer") from None


def add_health_routes(app: web.Application) -> None:
    app[READINESS] = Readiness()
    app.router.add_get(HEALTH_PATH, healthz, name="health")
    app.router.add_get(READY_PATH, readyz, name="ready")
