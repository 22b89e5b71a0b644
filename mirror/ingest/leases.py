"""Who walks a scope, and the record of each walk.

A walk holds the scope's lease (``scopes.lease_owner`` / ``lease_until``) for
its whole duration, renewing it as it goes; another ingest process finding the
lease held skips the scope for this pass instead of walking it twice. Each walk
bumps the scope's ``generation`` and has a ``sync_runs`` row; the scope row
keeps the last walk's outcome for ``/mirror/v1/sync``.

A walker that died leaves its lease to expire and its run ``running``: the next
lease holder marks such runs failed.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass

import asyncpg

from mirror.errors import LeaseLost
from mirror.model import Scope

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 120.0

ENSURE_SCOPE = "INSERT INTO scopes (scope) VALUES ($1) ON CONFLICT (scope) DO NOTHING"
TAKE_LEASE = """
UPDATE scopes
SET lease_owner = $2,
    lease_until = now() + make_interval(secs => $3),
    generation = generation + 1,
    last_started_at = now()
WHERE scope = $1 AND (lease_owner IS NULL OR lease_until < now() OR lease_owner = $2)
RETURNING generation
"""
ABANDON_STALE_RUNS = """
UPDATE sync_runs
SET status = 'failed', finished_at = now(), error = 'abandoned: its walker stopped without finishing'
WHERE scope = $1 AND status = 'running'
"""
START_RUN = "INSERT INTO sync_runs (scope, generation) VALUES ($1, $2) RETURNING id"
RENEW_LEASE = """
UPDATE scopes SET lease_until = now() + make_interval(secs => $3)
WHERE scope = $1 AND lease_owner = $2
RETURNING scope
"""
FINISH_RUN = """
UPDATE sync_runs
SET finished_at = now(), status = $2, pages = $3, images = $4, created = $5, updated = $6,
    deleted = $7, anomalies = $8, error = $9
WHERE id = $1
"""
FINISH_COMPLETE = """
UPDATE scopes
SET lease_owner = NULL, lease_until = NULL,
    last_complete_at = now(), last_duration_s = $3, last_images = $4
WHERE scope = $1 AND lease_owner = $2
"""
FINISH_FAILED = """
UPDATE scopes
SET lease_owner = NULL, lease_until = NULL, last_error = $3, last_error_at = now()
WHERE scope = $1 AND lease_owner = $2
"""
RELEASE_LEASE = """
UPDATE scopes SET lease_owner = NULL, lease_until = NULL WHERE scope = $1 AND lease_owner = $2
"""
LAST_IMAGES = "SELECT last_images FROM scopes WHERE scope = $1"


def new_owner_id() -> str:
    """Names this ingest process in leases: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class RunOutcome:
    status: str  # complete | failed | cancelled
    pages: int
    images: int
    created: int
    updated: int
    deleted: int
    anomalies: int
    seconds: float
    error: str | None = None


class ScopeLease:
    """The lease on one scope for one walk, and that walk's ``sync_runs`` row."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        scope: Scope,
        owner: str,
        generation: int,
        run_id: int,
        lease_s: float,
    ) -> None:
        self.conn = conn
        self.scope = scope
        self.owner = owner
        self.generation = generation
        self.run_id = run_id
        self.lease_s = lease_s
        self._renewed = time.monotonic()

    @classmethod
    async def take(
        cls, conn: asyncpg.Connection, scope: Scope, owner: str, *, lease_s: float = DEFAULT_LEASE_S
    ) -> ScopeLease | None:
        """The lease and a new run, or None when another walker holds the scope."""
        async with conn.transaction():
            await conn.execute(ENSURE_SCOPE, str(scope))
            generation = await conn.fetchval(TAKE_LEASE, str(scope), owner, lease_s)
            if generation is None:
                return None
            await conn.execute(ABANDON_STALE_RUNS, str(scope))
            run_id = await conn.fetchval(START_RUN, str(scope), generation)
        return cls(conn, scope, owner, generation, run_id, lease_s)

    async def keep(self) -> None:
        """Renew the lease once a third of it has passed; raises LeaseLost if it was taken over."""
        if time.monotonic() - self._renewed < self.lease_s / 3:
            return
        renewed = await self.conn.fetchval(RENEW_LEASE, str(self.scope), self.owner, self.lease_s)
        if renewed is None:
            raise LeaseLost(f"the lease on {self.scope} was taken over by another walker")
        self._renewed = time.monotonic()

    async def finish(self, outcome: RunOutcome) -> None:
        """Record the run and the scope's state, and release the lease."""
        async with self.conn.transaction():
            await self.conn.execute(
                FINISH_RUN,
                self.run_id,
                outcome.status,
                outcome.pages,
                outcome.images,
                outcome.created,
                outcome.updated,
                outcome.deleted,
                outcome.anomalies,
                outcome.error,
            )
            if outcome.status == "complete":
                await self.conn.execute(
                    FINISH_COMPLETE, str(self.scope), self.owner, outcome.seconds, outcome.images
                )
            elif outcome.status == "failed":
                await self.conn.execute(
                    FINISH_FAILED, str(self.scope), self.owner, outcome.error or "failed"
                )
            else:
                await self.conn.execute(RELEASE_LEASE, str(self.scope), self.owner)


async def expected_images(conn: asyncpg.Connection, scope: Scope) -> int | None:
    """How many images the scope's last complete walk saw (for an ETA)."""
    value = await conn.fetchval(LAST_IMAGES, str(scope))
    return int(value) if value is not None else None
