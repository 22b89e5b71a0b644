"""Who walks a scope, and the record of each walk.

The lease on a scope is a session-level advisory lock (keyed by a 64-bit hash
of the scope's name), taken on the connection the walk does all its work on
and held for the walk's whole duration. Another ingest process finding it held
skips the scope for this pass instead of walking it twice. The lock lives as
long as that connection: when the walker's process dies, even by ``kill -9``,
PostgreSQL ends its session and frees the lock at once, and the next ingest
walks the scope without waiting for anything to expire.

``scopes.lease_owner`` / ``lease_until`` record who holds it (renewed as the
walk goes, for ``/mirror/v1/sync`` and for people reading the table); they no
longer decide anything. Each walk bumps the scope's ``generation`` and has a
``sync_runs`` row; the scope row keeps the last walk's outcome.

A walker that died leaves its run ``running`` and its row lease behind: the
next lease holder takes the row over and marks such runs failed.
"""

from __future__ import annotations

import contextlib
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
# A holder that has just died may still have a backend finishing its exit: the
# lock is waited for this long before the scope is skipped as held elsewhere.
LOCK_WAIT_S = 1.0
# Mixed into the scope's hash so that the keys differ from other users of hashtextextended.
LEASE_LOCK_SEED = 0x6D69_7272_6F72_0003

ENSURE_SCOPE = "INSERT INTO scopes (scope) VALUES ($1) ON CONFLICT (scope) DO NOTHING"
LOCK_WAIT = "SELECT set_config('lock_timeout', $1, true)"
LOCK_SCOPE = "SELECT pg_advisory_lock(hashtextextended($1, $2))"
UNLOCK_SCOPE = "SELECT pg_advisory_unlock(hashtextextended($1, $2))"
# The backend holding a scope's lock (a bigint key shows as classid = high 32
# bits, objid = low 32 bits, objsubid = 1), or no row.
LOCK_HOLDER = """
WITH k AS (SELECT hashtextextended($1, $2) AS key)
SELECT l.pid FROM pg_locks l, k
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = (k.key >> 32) & 4294967295
  AND l.objid::bigint = k.key & 4294967295
"""
# The row follows the lock: whoever holds the lock takes the row over, whatever it says.
TAKE_LEASE = """
UPDATE scopes
SET lease_owner = $2,
    lease_until = now() + make_interval(secs => $3),
    generation = generation + 1,
    last_started_at = now()
WHERE scope = $1
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
        cls,
        conn: asyncpg.Connection,
        scope: Scope,
        owner: str,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        lock_wait_s: float = LOCK_WAIT_S,
    ) -> ScopeLease | None:
        """The lease and a new run, or None when another walker holds the scope.

        The lock is held by ``conn``'s session until ``finish`` (or the session's end).
        """
        if not await _lock(conn, scope, lock_wait_s):
            return None
        try:
            async with conn.transaction():
                await conn.execute(ENSURE_SCOPE, str(scope))
                generation = await conn.fetchval(TAKE_LEASE, str(scope), owner, lease_s)
                await conn.execute(ABANDON_STALE_RUNS, str(scope))
                run_id = await conn.fetchval(START_RUN, str(scope), generation)
        except BaseException:
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await _unlock(conn, scope)
            raise
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
        try:
            await self._record(outcome)
        finally:
            await _unlock(self.conn, self.scope)

    async def _record(self, outcome: RunOutcome) -> None:
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


async def _lock(conn: asyncpg.Connection, scope: Scope, wait_s: float) -> bool:
    """Take the scope's lock for ``conn``'s session, waiting at most ``wait_s``."""
    try:
        async with conn.transaction():
            # set_config(..., true) is local to this transaction; the lock outlives it.
            await conn.execute(LOCK_WAIT, f"{max(1, round(wait_s * 1000))}ms")
            await conn.execute(LOCK_SCOPE, str(scope), LEASE_LOCK_SEED)
    except asyncpg.LockNotAvailableError:
        return False
    return True


async def _unlock(conn: asyncpg.Connection, scope: Scope) -> None:
    if conn.is_closed():
        return  # the session ended, and PostgreSQL freed its locks with it
    await conn.execute(UNLOCK_SCOPE, str(scope), LEASE_LOCK_SEED)


async def lease_holder(conn: asyncpg.Connection, scope: Scope) -> int | None:
    """The backend pid whose session holds the scope's lease, or None."""
    pid = await conn.fetchval(LOCK_HOLDER, str(scope), LEASE_LOCK_SEED)
    return int(pid) if pid is not None else None


async def expected_images(conn: asyncpg.Connection, scope: Scope) -> int | None:
    """How many images the scope's last complete walk saw (for an ETA)."""
    value = await conn.fetchval(LAST_IMAGES, str(scope))
    return int(value) if value is not None else None
