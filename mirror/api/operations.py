"""Delete through the mirror: pass it to the upstream, follow its Operation, settle the index.

``DELETE /images/{id}`` asks the upstream, records the Operation it answers in
``operations`` and returns it unchanged. The Operation is then followed until it
is done, both when a client asks (``GET /operations/{id}``) and by a background
poll, so the index converges even if nobody asks. When it is done without an
error, the image is gone upstream: in one transaction it leaves the index (its
blob references too, with ``registry.blob.orphaned`` for digests left without
any, and ``registry.tag.removed`` for its tags) and ``registry.image.deleted``
(reason ``api``) is written, and the operation is marked applied. Every one of
these events carries ``operationId`` and ``actor`` (who asked: role, token id,
request id, client address), stored with the operation when it started. Settling is idempotent: the operation row is locked
and the applied flag checked first, and an image the ingest already removed is
simply not there to delete twice.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Protocol

import asyncpg
import orjson

from mirror.errors import NotFound, UpstreamError, UpstreamStatusError
from mirror.ingest.merge import delete_images

log = logging.getLogger(__name__)

# Deletes through the local API are told apart from those the ingest detects.
EVENT_SOURCE = "/registry-mirror/api"

DELETE_REASON = "api"
# Operations nobody could settle within this time are left to the ingest's own
# deletion check (the upstream may have forgotten them).
FOLLOW_FOR = timedelta(days=1)
POLL_BATCH = 100


class OperationsUpstream(Protocol):
    """What the API needs of the upstream (``mirror.upstream.client.UpstreamClient``)."""

    async def delete_image(self, image_id: str) -> dict[str, Any]: ...

    async def get_operation(self, operation_id: str) -> dict[str, Any]: ...


UPSERT_OPERATION = """
INSERT INTO operations (id, image_id, doc, done, actor)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc, done = EXCLUDED.done, updated_at = now()
"""
SELECT_OPERATION = (
    "SELECT id, image_id, doc::text AS doc, done, applied FROM operations WHERE id = $1"
)
UPDATE_OPERATION = """
UPDATE operations SET doc = $2, done = $3, updated_at = now()
WHERE id = $1 AND NOT done
"""
LOCK_OPERATION = "SELECT image_id, applied, actor FROM operations WHERE id = $1 FOR UPDATE"
MARK_APPLIED = "UPDATE operations SET applied = true, updated_at = now() WHERE id = $1"
# Not settled, not failed, recent enough to follow.
SELECT_PENDING = """
SELECT id, done, doc::text AS doc FROM operations
WHERE NOT applied AND (doc -> 'error') IS NULL AND created_at > now() - $1::interval
ORDER BY created_at
LIMIT $2
"""


class DeleteTracker:
    """Starts Deletes upstream and settles their Operations in the index."""

    def __init__(self, pool: asyncpg.Pool, upstream: OperationsUpstream) -> None:
        self._pool = pool
        self._upstream = upstream

    async def start_delete(
        self, image_id: str, actor: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The upstream's Operation for deleting ``image_id`` (its errors pass through).

        ``actor`` (who asked) is kept with the operation for the events of its settling.
        """
        operation = await self._upstream.delete_image(image_id)
        operation_id = _operation_id(operation)
        done = operation.get("done") is True
        async with self._pool.acquire() as conn:
            await conn.execute(UPSERT_OPERATION, operation_id, image_id, operation, done, actor)
        if done:
            await self._settle(operation_id, operation)
        log.info("delete of image %s started upstream: operation %s", image_id, operation_id)
        return operation

    async def get(self, operation_id: str) -> bytes:
        """The Operation's JSON: as stored once done, else as the upstream says now."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(SELECT_OPERATION, operation_id)
        if row is None:
            raise NotFound(f"Operation {operation_id} not found")
        if row["done"]:
            if not row["applied"]:
                await self._settle(operation_id, _parse(row["doc"]))
            return str(row["doc"]).encode()
        operation = await self.follow(operation_id)
        # Without an answer from the upstream, the stored state is the best we know.
        return orjson.dumps(operation) if operation is not None else str(row["doc"]).encode()

    async def follow(self, operation_id: str) -> dict[str, Any] | None:
        """Poll the upstream for the Operation, store it, settle it when done.

        None when the upstream could not say (the background poll tries again).
        """
        try:
            operation = await self._upstream.get_operation(operation_id)
        except (UpstreamStatusError, UpstreamError) as exc:
            log.warning("operation %s: cannot poll the upstream: %s", operation_id, exc)
            return None
        done = operation.get("done") is True
        async with self._pool.acquire() as conn:
            await conn.execute(UPDATE_OPERATION, operation_id, operation, done)
        if done:
            await self._settle(operation_id, operation)
        return operation

    async def poll_pending(self) -> int:
        """Follow every operation still to settle once; returns how many were followed."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(SELECT_PENDING, FOLLOW_FOR, POLL_BATCH)
        for row in rows:
            if row["done"]:  # done, not yet settled (a crash in between): no need to ask again
                await self._settle(row["id"], _parse(row["doc"]))
            else:
                await self.follow(row["id"])
        return len(rows)

    async def _settle(self, operation_id: str, operation: dict[str, Any]) -> None:
        if "error" in operation:
            log.info("operation %s failed upstream: %s", operation_id, operation["error"])
            return
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(LOCK_OPERATION, operation_id)
            if row is None or row["applied"]:
                return
            origin: dict[str, Any] = {"operationId": operation_id}
            if row["actor"] is not None:
                origin["actor"] = row["actor"]
            result = await delete_images(
                conn, [row["image_id"]], DELETE_REASON, source=EVENT_SOURCE, origin=origin
            )
            await conn.execute(MARK_APPLIED, operation_id)
        log.info(
            "operation %s done: image %s %s the index",
            operation_id,
            row["image_id"],
            "left" if result.deleted else "was already gone from",
        )


def _operation_id(operation: dict[str, Any]) -> str:
    operation_id = operation.get("id")
    if not isinstance(operation_id, str) or not operation_id:
        raise UpstreamError("the upstream's Delete answered an Operation without an id")
    return operation_id


def _parse(doc: Any) -> dict[str, Any]:
    value = orjson.loads(doc) if isinstance(doc, str | bytes) else doc
    return value if isinstance(value, dict) else {}
